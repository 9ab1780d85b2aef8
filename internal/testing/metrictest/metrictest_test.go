package metrictest_test

import (
	"context"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"

	"github.com/sandboxd/sandboxd/internal/testing/metrictest"
)

// Counters, gauges and histograms are read, summed over the points that carry the
// wanted attributes.
func TestValue(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	meter := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader)).Meter("test")
	ctx := context.Background()
	c, _ := meter.Int64Counter("c")
	c.Add(ctx, 2, metric.WithAttributes(attribute.String("k", "a"), attribute.String("x", "1")))
	c.Add(ctx, 3, metric.WithAttributes(attribute.String("k", "b")))
	h, _ := meter.Float64Histogram("h")
	h.Record(ctx, 0.5, metric.WithAttributes(attribute.String("k", "a")))
	h.Record(ctx, 7, metric.WithAttributes(attribute.String("k", "a")))
	_, _ = meter.Int64ObservableGauge("g", metric.WithInt64Callback(func(_ context.Context, o metric.Int64Observer) error {
		o.Observe(4)
		return nil
	}))
	for _, c := range []struct {
		name string
		want []string
		sum  float64
	}{
		{"c", nil, 5}, {"c", []string{"k=a"}, 2}, {"c", []string{"k=a", "x=1"}, 2}, {"c", []string{"k=c"}, 0},
		{"h", []string{"k=a"}, 2}, {"g", nil, 4}, {"none", nil, 0},
	} {
		if got := metrictest.Value(t, reader, c.name, c.want...); got != c.sum {
			t.Errorf("Value(%s, %v) = %g, want %g", c.name, c.want, got, c.sum)
		}
	}
}
