// Package metrictest reads what a test's OpenTelemetry instruments recorded: the value
// of a counter, a gauge or a histogram's count, over the data points with given
// attributes.
package metrictest

import (
	"context"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
)

// Value is the value of the named int64 counter or gauge that reader collects, summed
// over the data points whose attributes include want ("key=value" strings); of a float64
// histogram, its count. It is 0 for an instrument that recorded nothing.
func Value(t testing.TB, reader *sdkmetric.ManualReader, name string, want ...string) float64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name != name {
				continue
			}
			switch d := m.Data.(type) {
			case metricdata.Sum[int64]:
				for _, dp := range d.DataPoints {
					if has(dp.Attributes, want) {
						sum += float64(dp.Value)
					}
				}
			case metricdata.Gauge[int64]:
				for _, dp := range d.DataPoints {
					if has(dp.Attributes, want) {
						sum += float64(dp.Value)
					}
				}
			case metricdata.Histogram[float64]:
				for _, dp := range d.DataPoints {
					if has(dp.Attributes, want) {
						sum += float64(dp.Count)
					}
				}
			}
		}
	}
	return sum
}

func has(set attribute.Set, want []string) bool {
	for _, kv := range want {
		k, v, _ := strings.Cut(kv, "=")
		if got, ok := set.Value(attribute.Key(k)); !ok || got.String() != v {
			return false
		}
	}
	return true
}
