package httpapi_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/sandboxd/sandboxd/client"
	"github.com/sandboxd/sandboxd/internal/hostfiles"
	"github.com/sandboxd/sandboxd/internal/httpapi"
	"github.com/sandboxd/sandboxd/internal/keylock"
	"github.com/sandboxd/sandboxd/internal/lifecycle"
	"github.com/sandboxd/sandboxd/internal/lifecycletest"
	"github.com/sandboxd/sandboxd/internal/memstore"
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

// runtimeCalls counts the runtime's calls so far.
func (f *fixture) runtimeCalls() (creates, stops, deletes int) {
	c, s, d := f.runtime.Calls()
	return len(c), len(s), len(d)
}

// fixture is a real lifecycle.Service over memstore and keylock with a fake runtime,
// a fake executor and the real hostfiles, served by httptest.
type fixture struct {
	srv      *httptest.Server
	client   *client.Client
	runtime  *lifecycletest.Runtime
	executor *lifecycletest.Executor
	store    *memstore.Store
	clock    *lifecycletest.Clock
	svc      *lifecycle.Service
}

type option func(*httpapi.Config)

func newFixture(t *testing.T, opts ...option) *fixture {
	t.Helper()
	f := &fixture{
		runtime: &lifecycletest.Runtime{ContainerID: func(n int, _ lifecycle.CreateSpec) string { return fmt.Sprintf("ctr-%d", n) }},
		store:   memstore.New(),
		clock:   lifecycletest.NewClock(time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)),
	}
	f.executor = &lifecycletest.Executor{Clock: f.clock, Took: testExecTook}
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
	if c, s, d := f.runtimeCalls(); c+s+d != 0 {
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
