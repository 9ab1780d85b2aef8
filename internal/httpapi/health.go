package httpapi

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"time"

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
		Description: "503 when a dependency cannot serve or does not answer within the readiness timeout (below 2 s); the reason goes to sandboxd's log only.",
		Tags:        []string{"operations"},
		Errors:      []int{http.StatusServiceUnavailable},
	}, func(ctx context.Context, _ *struct{}) (*probeOutput, error) {
		if err := s.checkReady(ctx); err != nil {
			// The probe is open: what failed, and how, is for the operator's log.
			s.log.WarnContext(ctx, "not_ready", slog.String("error", err.Error()))
			return nil, huma.NewError(http.StatusServiceUnavailable, "not ready")
		}
		return &probeOutput{Body: probeStatus{Status: "ready"}}, nil
	})
}

// DefaultReadyTimeout bounds a readiness check, so that /readyz answers within 2 s
// (the usual probe timeout) even when a dependency hangs.
const DefaultReadyTimeout = 1500 * time.Millisecond

// checkReady runs the readiness check for at most readyTimeout, even if the check itself
// does not heed its context.
func (s *server) checkReady(ctx context.Context) error {
	if s.ready == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, s.readyTimeout)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- s.ready(ctx) }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return fmt.Errorf("no answer within %s: %w", s.readyTimeout, ctx.Err())
	}
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
