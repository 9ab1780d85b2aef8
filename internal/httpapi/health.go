package httpapi

import (
	"context"
	"net/http"

	"github.com/danielgtaylor/huma/v2"
)

// The probes and the metrics endpoint: open, outside /v1/.

type probeStatus struct {
	Status string `json:"status" example:"ok"`
}

type probeOutput struct {
	Body probeStatus
}

func (s *server) registerHealth(api huma.API) {
	huma.Register(api, huma.Operation{
		OperationID: "healthz",
		Method:      http.MethodGet,
		Path:        "/healthz",
		Summary:     "Liveness: the process serves HTTP",
		Tags:        []string{"operations"},
	}, func(context.Context, *struct{}) (*probeOutput, error) {
		return &probeOutput{Body: probeStatus{Status: "ok"}}, nil
	})

	huma.Register(api, huma.Operation{
		OperationID: "readyz",
		Method:      http.MethodGet,
		Path:        "/readyz",
		Summary:     "Readiness: the registry and the engine are reachable",
		Description: "503 with the reason when a dependency cannot serve.",
		Tags:        []string{"operations"},
		Errors:      []int{http.StatusServiceUnavailable},
	}, func(ctx context.Context, _ *struct{}) (*probeOutput, error) {
		if s.ready != nil {
			if err := s.ready(ctx); err != nil {
				return nil, huma.NewError(http.StatusServiceUnavailable, "not ready: "+err.Error())
			}
		}
		return &probeOutput{Body: probeStatus{Status: "ready"}}, nil
	})
}

// registerMetrics serves the injected metrics handler at GET /metrics and documents it;
// huma does not wrap it, since its body is Prometheus text, not JSON.
func (s *server) registerMetrics(api huma.API, mux *http.ServeMux) {
	api.OpenAPI().AddOperation(&huma.Operation{
		OperationID: "metrics",
		Method:      http.MethodGet,
		Path:        "/metrics",
		Summary:     "Metrics in the Prometheus text format",
		Tags:        []string{"operations"},
		Responses: map[string]*huma.Response{
			"200": {
				Description: "The metrics.",
				Content:     map[string]*huma.MediaType{"text/plain": {Schema: &huma.Schema{Type: huma.TypeString}}},
			},
			"404": {Description: "No metrics exporter is configured."},
		},
	})
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, r *http.Request) {
		if s.metrics == nil {
			writeProblem(w, http.StatusNotFound, "metrics are not enabled")
			return
		}
		s.metrics.ServeHTTP(w, r)
	})
}
