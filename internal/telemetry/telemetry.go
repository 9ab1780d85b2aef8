// Package telemetry provides sandboxd's OpenTelemetry SDK wiring: a MeterProvider read by
// a Prometheus exporter on the service's own registry (served by Metrics), and a
// TracerProvider that exports over OTLP/HTTP when an endpoint is configured. It is the
// only package that imports the SDK; everything else takes the API's providers.
package telemetry

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"
)

// Config says what to export.
type Config struct {
	ServiceName    string // default "sandboxd"
	ServiceVersion string
	// OTLPEndpoint is the collector's OTLP/HTTP base URL (http://host:4318): traces go to
	// its /v1/traces, or to the URL as given when it has a path. Empty: traces are not
	// recorded at all.
	OTLPEndpoint string
}

// Telemetry holds the providers the service is built with. Shutdown flushes them.
type Telemetry struct {
	// MeterProvider and TracerProvider are what the rest of the service uses.
	MeterProvider  metric.MeterProvider
	TracerProvider trace.TracerProvider
	// Metrics serves the Prometheus text exposition of every metric, /metrics.
	Metrics http.Handler

	shutdown []func(context.Context) error
}

// New builds the providers. It makes no connection: an unreachable collector shows in the
// exporter's errors, not here. Errors are for a configuration the SDK refuses.
func New(ctx context.Context, cfg Config) (*Telemetry, error) {
	if cfg.ServiceName == "" {
		cfg.ServiceName = "sandboxd"
	}
	attrs := []attribute.KeyValue{attribute.String("service.name", cfg.ServiceName)}
	if cfg.ServiceVersion != "" {
		attrs = append(attrs, attribute.String("service.version", cfg.ServiceVersion))
	}
	res, err := resource.Merge(resource.Default(), resource.NewSchemaless(attrs...))
	if err != nil {
		return nil, fmt.Errorf("telemetry: resource: %w", err)
	}

	reg := prometheus.NewRegistry()
	if err := reg.Register(collectors.NewGoCollector()); err != nil {
		return nil, fmt.Errorf("telemetry: go collector: %w", err)
	}
	if err := reg.Register(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})); err != nil {
		return nil, fmt.Errorf("telemetry: process collector: %w", err)
	}
	exporter, err := otelprom.New(otelprom.WithRegisterer(reg))
	if err != nil {
		return nil, fmt.Errorf("telemetry: prometheus exporter: %w", err)
	}
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(exporter), sdkmetric.WithResource(res))
	t := &Telemetry{
		MeterProvider:  mp,
		TracerProvider: tracenoop.NewTracerProvider(),
		Metrics:        promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}),
		shutdown:       []func(context.Context) error{mp.Shutdown},
	}

	if cfg.OTLPEndpoint != "" {
		endpoint, err := tracesURL(cfg.OTLPEndpoint)
		if err != nil {
			return nil, err
		}
		spans, err := otlptracehttp.New(ctx, otlptracehttp.WithEndpointURL(endpoint))
		if err != nil {
			return nil, fmt.Errorf("telemetry: otlp exporter: %w", err)
		}
		tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(spans), sdktrace.WithResource(res))
		t.TracerProvider = tp
		t.shutdown = append(t.shutdown, tp.Shutdown) // flushes the batch, then closes
	}
	return t, nil
}

// Shutdown flushes what is buffered and stops the providers. ctx bounds the flush.
func (t *Telemetry) Shutdown(ctx context.Context) error {
	var errs []error
	for _, f := range t.shutdown {
		errs = append(errs, f(ctx))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("telemetry: shutdown: %w", err)
	}
	return nil
}

// tracesURL is where spans are posted: the signal path is added to a base URL, as the
// OTEL_EXPORTER_OTLP_ENDPOINT convention does.
func tracesURL(endpoint string) (string, error) {
	u, err := url.Parse(endpoint)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", fmt.Errorf("telemetry: otlp endpoint %q is not an http(s) URL", endpoint)
	}
	if u.Path == "" || u.Path == "/" {
		u.Path = "/v1/traces"
	} else {
		u.Path = strings.TrimSuffix(u.Path, "/")
	}
	return u.String(), nil
}
