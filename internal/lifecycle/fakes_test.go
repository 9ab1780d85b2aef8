package lifecycle_test

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/sandboxd/sandboxd/internal/keylock"
	"github.com/sandboxd/sandboxd/internal/lifecycle"
	"github.com/sandboxd/sandboxd/internal/lifecycletest"
	"github.com/sandboxd/sandboxd/internal/memstore"
	"github.com/sandboxd/sandboxd/internal/sandbox"
)

// runtimeError stands for the seed's RuntimeError: its type names the failure in logs
// and metrics.
type runtimeError struct{ msg string }

func (e *runtimeError) Error() string { return e.msg }

const runtimeErrorType = "*lifecycle_test.runtimeError"

// stopFails is a runtime whose stop of each of containers fails as the seed's does.
func stopFails(containers ...string) *lifecycletest.Runtime {
	rt := &lifecycletest.Runtime{}
	for _, c := range containers {
		rt.FailStop(c, &runtimeError{"stop_failed"})
	}
	return rt
}

// blockingRuntime holds every create until allowCreate is closed, after signalling
// createStarted.
type blockingRuntime struct {
	*lifecycletest.Runtime
	createStarted chan struct{}
	allowCreate   chan struct{}
}

func newBlockingRuntime() *blockingRuntime {
	r := &blockingRuntime{Runtime: &lifecycletest.Runtime{}, createStarted: make(chan struct{}, 1), allowCreate: make(chan struct{})}
	r.BeforeCreate = func(context.Context, lifecycle.CreateSpec) error {
		select {
		case r.createStarted <- struct{}{}:
		default:
		}
		select {
		case <-r.allowCreate:
			return nil
		case <-time.After(5 * time.Second):
			return errors.New("create was never allowed")
		}
	}
	return r
}

// fakeLocker records the chats it locks and excludes nobody, like the seed's FakeLocker.
type fakeLocker struct {
	mu    sync.Mutex
	chats []uuid.UUID
}

func (l *fakeLocker) Lock(_ context.Context, chat uuid.UUID) (func(), error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.chats = append(l.chats, chat)
	return func() {}, nil
}

func (l *fakeLocker) locked() []uuid.UUID {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.chats)
}

// trackingLocker wraps the real process-local locker and signals the second attempt.
type trackingLocker struct {
	inner           *keylock.Locker
	mu              sync.Mutex
	chats           []uuid.UUID
	secondAttempted chan struct{}
}

func (l *trackingLocker) Lock(ctx context.Context, chat uuid.UUID) (func(), error) {
	l.mu.Lock()
	l.chats = append(l.chats, chat)
	if len(l.chats) == 2 {
		close(l.secondAttempted)
	}
	l.mu.Unlock()
	return l.inner.Lock(ctx, chat)
}

// staleSnapshotStore lists a fixed snapshot as expired, whatever it holds.
type staleSnapshotStore struct {
	*memstore.Store
	snapshot sandbox.Session
}

func (s staleSnapshotStore) ListExpired(context.Context, time.Time, lifecycle.ExpiredAfter, int) ([]sandbox.Session, error) {
	return []sandbox.Session{s.snapshot}, nil
}

// failingSaveStore fails the next Save once armed.
type failingSaveStore struct {
	*memstore.Store
	err  error
	fail bool
}

func (s *failingSaveStore) Save(ctx context.Context, session sandbox.Session) error {
	if s.fail {
		s.fail = false
		return s.err
	}
	return s.Store.Save(ctx, session)
}

// logRecord is one log call as the seed's FakeLogger keeps it. Attrs holds each value
// as slog resolved it (a string stays a string, an int is an int64, anything else is
// itself), so that a comparison sees the value's type as well as its text.
type logRecord struct {
	Level string
	Msg   string
	Attrs map[string]any
}

// recordingHandler is a slog.Handler that keeps every record.
type recordingHandler struct {
	mu      *sync.Mutex
	records *[]logRecord
}

func newRecordingLogger() (*slog.Logger, func() []logRecord) {
	h := recordingHandler{mu: &sync.Mutex{}, records: &[]logRecord{}}
	return slog.New(h), func() []logRecord {
		h.mu.Lock()
		defer h.mu.Unlock()
		return slices.Clone(*h.records)
	}
}

func (h recordingHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h recordingHandler) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h recordingHandler) WithGroup(string) slog.Handler            { return h }
func (h recordingHandler) Handle(_ context.Context, r slog.Record) error {
	rec := logRecord{Level: r.Level.String(), Msg: r.Message, Attrs: map[string]any{}}
	r.Attrs(func(a slog.Attr) bool {
		rec.Attrs[a.Key] = a.Value.Resolve().Any()
		return true
	})
	h.mu.Lock()
	*h.records = append(*h.records, rec)
	h.mu.Unlock()
	return nil
}

// telemetry gives a Service real SDK providers backed by in-memory recorders.
type telemetry struct {
	spans  *tracetest.SpanRecorder
	starts *startRecorder
	reader *sdkmetric.ManualReader
	tp     *sdktrace.TracerProvider
	mp     *sdkmetric.MeterProvider
}

func newTelemetry(t *testing.T) *telemetry {
	t.Helper()
	tel := &telemetry{spans: tracetest.NewSpanRecorder(), starts: &startRecorder{}, reader: sdkmetric.NewManualReader()}
	tel.tp = sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(tel.starts), sdktrace.WithSpanProcessor(tel.spans))
	tel.mp = sdkmetric.NewMeterProvider(sdkmetric.WithReader(tel.reader))
	t.Cleanup(func() {
		_ = tel.tp.Shutdown(context.Background())
		_ = tel.mp.Shutdown(context.Background())
	})
	return tel
}

// startRecorder is a span processor that keeps the attributes each span had when it
// started, as the seed's RecordingTracer keeps start_span's attrs apart from those set
// later.
type startRecorder struct {
	mu    sync.Mutex
	attrs map[trace.SpanID][]attribute.KeyValue
}

func (r *startRecorder) OnStart(_ context.Context, s sdktrace.ReadWriteSpan) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.attrs == nil {
		r.attrs = map[trace.SpanID][]attribute.KeyValue{}
	}
	r.attrs[s.SpanContext().SpanID()] = slices.Clone(s.Attributes())
}

func (r *startRecorder) at(s sdktrace.ReadOnlySpan) []attribute.KeyValue {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.attrs[s.SpanContext().SpanID()]
}

func (*startRecorder) OnEnd(sdktrace.ReadOnlySpan)      {}
func (*startRecorder) Shutdown(context.Context) error   { return nil }
func (*startRecorder) ForceFlush(context.Context) error { return nil }

// findSpan returns the first ended span named name that started with the attributes
// atStart and was given the attributes later afterwards: each of later's keys is absent
// when the span starts and has its value when it ends. Either map may be nil.
func (tel *telemetry) findSpan(t *testing.T, name string, atStart, later map[string]any) sdktrace.ReadOnlySpan {
	t.Helper()
	for _, s := range tel.spans.Ended() {
		start := tel.starts.at(s)
		if s.Name() == name && attrsInclude(start, atStart) && attrsInclude(s.Attributes(), later) && !anyKey(start, later) {
			return s
		}
	}
	t.Fatalf("missing span %s started with %v, given %v later; have %s", name, atStart, later, tel.describeSpans())
	return nil
}

func anyKey(have []attribute.KeyValue, keys map[string]any) bool {
	for _, kv := range have {
		if _, ok := keys[string(kv.Key)]; ok {
			return true
		}
	}
	return false
}

func (tel *telemetry) describeSpans() string {
	out := ""
	for _, s := range tel.spans.Ended() {
		start := attribute.NewSet(tel.starts.at(s)...)
		end := attribute.NewSet(s.Attributes()...)
		out += "\n  " + s.Name() + " started with " + start.Encoded(attribute.DefaultEncoder()) +
			", ended with " + end.Encoded(attribute.DefaultEncoder())
	}
	return out
}

func attrsInclude(have []attribute.KeyValue, want map[string]any) bool {
	m := map[string]any{}
	for _, kv := range have {
		m[string(kv.Key)] = kv.Value.AsInterface()
	}
	for k, v := range want {
		if i, ok := v.(int); ok {
			v = int64(i)
		}
		if m[k] != v {
			return false
		}
	}
	return true
}

func hasAttr(s sdktrace.ReadOnlySpan, key string) bool {
	for _, kv := range s.Attributes() {
		if string(kv.Key) == key {
			return true
		}
	}
	return false
}

// spanErrors returns the messages of the exceptions recorded on s.
func spanErrors(s sdktrace.ReadOnlySpan) []string {
	var msgs []string
	for _, e := range s.Events() {
		if e.Name != "exception" {
			continue
		}
		for _, kv := range e.Attributes {
			if kv.Key == "exception.message" {
				msgs = append(msgs, kv.Value.AsString())
			}
		}
	}
	return msgs
}

func (tel *telemetry) collect(t *testing.T) metricdata.ResourceMetrics {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := tel.reader.Collect(context.Background(), &rm); err != nil {
		t.Fatalf("collect metrics: %v", err)
	}
	return rm
}

func (tel *telemetry) metric(t *testing.T, name string) (metricdata.Metrics, bool) {
	t.Helper()
	for _, sm := range tel.collect(t).ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name == name {
				return m, true
			}
		}
	}
	return metricdata.Metrics{}, false
}

// counter returns the sum of counter name for the points whose attributes include want.
func (tel *telemetry) counter(t *testing.T, name string, want map[string]any) int64 {
	t.Helper()
	m, ok := tel.metric(t, name)
	if !ok {
		return 0
	}
	sum, ok := m.Data.(metricdata.Sum[int64])
	if !ok {
		t.Fatalf("%s is %T, want an int64 sum", name, m.Data)
	}
	var total int64
	for _, p := range sum.DataPoints {
		if attrsInclude(p.Attributes.ToSlice(), want) {
			total += p.Value
		}
	}
	return total
}

// gauge returns the last value of gauge name, and whether it was ever set.
func (tel *telemetry) gauge(t *testing.T, name string) (int64, bool) {
	t.Helper()
	m, ok := tel.metric(t, name)
	if !ok {
		return 0, false
	}
	g, ok := m.Data.(metricdata.Gauge[int64])
	if !ok {
		t.Fatalf("%s is %T, want an int64 gauge", name, m.Data)
	}
	if len(g.DataPoints) != 1 {
		return 0, false
	}
	return g.DataPoints[0].Value, true
}
