package httpapi_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/sandboxd/sandboxd/internal/client"
	"github.com/sandboxd/sandboxd/internal/hostfiles"
	"github.com/sandboxd/sandboxd/internal/httpapi"
	"github.com/sandboxd/sandboxd/internal/keylock"
	"github.com/sandboxd/sandboxd/internal/lifecycle"
	"github.com/sandboxd/sandboxd/internal/memstore"
	"github.com/sandboxd/sandboxd/internal/sandbox"
)

var _ httpapi.Sandboxes = (*lifecycle.Service)(nil)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	testToken = "s3cret-token"
	testTTL   = time.Hour

	// Limits of the fixture's lifecycle, small enough to cross in a test.
	testMaxTimeout  = time.Minute
	testOutputCap   = 1 << 10
	testMaxFile     = 256 << 10
	testMaxLifetime = 6 * time.Hour
	testExecTook    = 250 * time.Millisecond
)

// fakeRuntime makes pretend sandboxes and counts what it was asked to do.
type fakeRuntime struct {
	mu                      sync.Mutex
	creates, stops, deletes int
	createErr               error
}

func (r *fakeRuntime) Create(_ context.Context, spec lifecycle.CreateSpec) (sandbox.Session, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.createErr != nil {
		return sandbox.Session{}, r.createErr
	}
	r.creates++
	return sandbox.Session{
		ID:             spec.SessionID,
		ChatID:         spec.ChatID,
		ContainerID:    fmt.Sprintf("ctr-%d", r.creates),
		Status:         sandbox.StatusRunning,
		CreatedAt:      spec.CreatedAt,
		ExpiresAt:      spec.ExpiresAt,
		AgentID:        spec.AgentID,
		VolumeHostPath: spec.VolumeHostPath,
	}, nil
}

func (r *fakeRuntime) Stop(context.Context, string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.stops++
	return nil
}

func (r *fakeRuntime) Delete(context.Context, string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.deletes++
	return nil
}

// calls is every runtime call so far.
func (r *fakeRuntime) calls() (creates, stops, deletes int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.creates, r.stops, r.deletes
}

type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// fixture is a real lifecycle.Service over memstore and keylock with a fake runtime,
// a fake executor and the real hostfiles, served by httptest.
type fixture struct {
	srv      *httptest.Server
	client   *client.Client
	runtime  *fakeRuntime
	executor *fakeExecutor
	store    *memstore.Store
	clock    *fakeClock
	svc      *lifecycle.Service
}

type option func(*httpapi.Config)

func newFixture(t *testing.T, opts ...option) *fixture {
	t.Helper()
	f := &fixture{
		runtime: &fakeRuntime{},
		store:   memstore.New(),
		clock:   &fakeClock{now: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)},
	}
	f.executor = newFakeExecutor(f.clock)
	var err error
	f.svc, err = lifecycle.New(lifecycle.Config{
		Store: f.store, Locker: keylock.New(), Runtime: f.runtime, TTL: testTTL, Clock: f.clock,
		Executor: f.executor, Files: hostfiles.New(hostfiles.Config{}),
		ExecMaxTimeout: testMaxTimeout, ExecOutputCap: testOutputCap,
		MaxFileBytes: testMaxFile, MaxLifetime: testMaxLifetime,
	})
	if err != nil {
		t.Fatal(err)
	}
	cfg := httpapi.Config{
		Sandboxes:    f.svc,
		Tokens:       []string{"other-token", testToken},
		MaxBodyBytes: 1024,
		Now:          f.clock.Now,
	}
	for _, o := range opts {
		o(&cfg)
	}
	h, err := httpapi.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	f.srv = httptest.NewServer(h)
	t.Cleanup(f.srv.Close)
	f.client, err = client.New(f.srv.URL, testToken, f.srv.Client())
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// rows is how many sessions the registry holds.
func (f *fixture) rows(t *testing.T) int {
	t.Helper()
	n, err := f.store.Count(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// assertUntouched fails when the runtime was called or the registry holds anything.
func (f *fixture) assertUntouched(t *testing.T) {
	t.Helper()
	if c, s, d := f.runtime.calls(); c+s+d != 0 {
		t.Errorf("runtime calls: creates=%d stops=%d deletes=%d, want none", c, s, d)
	}
	if n := f.rows(t); n != 0 {
		t.Errorf("registry holds %d sessions, want 0", n)
	}
}

// request sends a raw request with the test token unless headers say otherwise.
func (f *fixture) request(t *testing.T, method, path, body string, headers map[string]string) *http.Response {
	t.Helper()
	var req *http.Request
	var err error
	if body == "" {
		req, err = http.NewRequest(method, f.srv.URL+path, nil)
	} else {
		req, err = http.NewRequest(method, f.srv.URL+path, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
	}
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+testToken)
	for k, v := range headers {
		if v == "" {
			req.Header.Del(k)
		} else {
			req.Header.Set(k, v)
		}
	}
	resp, err := f.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}
