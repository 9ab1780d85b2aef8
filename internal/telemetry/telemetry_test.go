package telemetry

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/proto"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func shutdown(t *testing.T, tel *Telemetry) {
	t.Helper()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := tel.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	})
}

func TestMetricShowsInHandler(t *testing.T) {
	ctx := context.Background()
	tel, err := New(ctx, Config{})
	if err != nil {
		t.Fatal(err)
	}
	shutdown(t, tel)

	counter, err := tel.MeterProvider.Meter("test").Int64Counter("sandbox.create.total")
	if err != nil {
		t.Fatal(err)
	}
	counter.Add(ctx, 3, metric.WithAttributes(attribute.String("result", "created")))

	rec := httptest.NewRecorder()
	tel.Metrics.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("status %d", rec.Code)
	}
	body := rec.Body.String()
	for _, want := range []string{
		`sandbox_create_total{`,
		`result="created"`,
		`service_name="sandboxd"`, // target_info carries the resource
		"go_goroutines",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics output lacks %s:\n%s", want, body)
		}
	}
	if !strings.Contains(body, `result="created"} 3`) {
		t.Errorf("the counter's value 3 is missing:\n%s", grep(body, "sandbox_create"))
	}
}

// Each Telemetry has its own registry: two in one process do not collide.
func TestNoGlobalRegistry(t *testing.T) {
	for range 2 {
		tel, err := New(context.Background(), Config{})
		if err != nil {
			t.Fatal(err)
		}
		shutdown(t, tel)
	}
}

// fakeCollector is an OTLP/HTTP trace endpoint that keeps the span names it receives.
type fakeCollector struct {
	mu    sync.Mutex
	paths []string
	names []string
}

func (c *fakeCollector) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	var req collectortrace.ExportTraceServiceRequest
	if err := proto.Unmarshal(body, &req); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	c.mu.Lock()
	c.paths = append(c.paths, r.URL.Path)
	for _, rs := range req.GetResourceSpans() {
		for _, ss := range rs.GetScopeSpans() {
			for _, s := range ss.GetSpans() {
				c.names = append(c.names, s.GetName())
			}
		}
	}
	c.mu.Unlock()
	resp, _ := proto.Marshal(&collectortrace.ExportTraceServiceResponse{})
	w.Header().Set("Content-Type", "application/x-protobuf")
	_, _ = w.Write(resp)
}

func TestTraceReachesCollector(t *testing.T) {
	collector := &fakeCollector{}
	srv := httptest.NewServer(collector)
	defer srv.Close()

	ctx := context.Background()
	tel, err := New(ctx, Config{OTLPEndpoint: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	_, span := tel.TracerProvider.Tracer("test").Start(ctx, "usecase.create_sandbox")
	span.End()

	// Shutdown flushes the batch: the span must have arrived when it returns.
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := tel.Shutdown(sctx); err != nil {
		t.Fatal(err)
	}
	collector.mu.Lock()
	defer collector.mu.Unlock()
	if len(collector.names) != 1 || collector.names[0] != "usecase.create_sandbox" {
		t.Errorf("collector got spans %q", collector.names)
	}
	for _, p := range collector.paths {
		if p != "/v1/traces" {
			t.Errorf("posted to %s, want /v1/traces", p)
		}
	}
}

func TestNoEndpointRecordsNoSpans(t *testing.T) {
	tel, err := New(context.Background(), Config{})
	if err != nil {
		t.Fatal(err)
	}
	shutdown(t, tel)
	_, span := tel.TracerProvider.Tracer("test").Start(context.Background(), "x")
	defer span.End()
	if span.IsRecording() {
		t.Error("a span records with no endpoint configured")
	}
}

func TestTracesURL(t *testing.T) {
	cases := map[string]string{
		"http://localhost:4318":              "http://localhost:4318/v1/traces",
		"http://localhost:4318/":             "http://localhost:4318/v1/traces",
		"https://otel.example:443/v1/traces": "https://otel.example:443/v1/traces",
	}
	for in, want := range cases {
		if got, err := tracesURL(in); err != nil || got != want {
			t.Errorf("tracesURL(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := tracesURL("localhost:4318"); err == nil {
		t.Error("a URL without scheme was accepted")
	}
}

func grep(s, sub string) string {
	var out []string
	for _, line := range strings.Split(s, "\n") {
		if strings.Contains(line, sub) {
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n")
}
