package httpapi_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/client"
	"github.com/sandboxd/sandboxd/internal/httpapi"
	"github.com/sandboxd/sandboxd/internal/keylock"
	"github.com/sandboxd/sandboxd/internal/lifecycle"
	"github.com/sandboxd/sandboxd/internal/lifecycletest"
	"github.com/sandboxd/sandboxd/internal/memstore"
)

// problem reads a problem document's status and detail.
func problem(t *testing.T, resp *http.Response) (int, string) {
	t.Helper()
	var p struct {
		Status int    `json:"status"`
		Detail string `json:"detail"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&p); err != nil {
		t.Fatalf("problem document: %v", err)
	}
	return p.Status, p.Detail
}

func TestMaxSandboxesAnswers429WithRetryAfter(t *testing.T) {
	runtime := &lifecycletest.Runtime{}
	store := memstore.New()
	svc, err := lifecycle.New(lifecycle.Config{
		Store: store, Locker: keylock.New(), Runtime: runtime, TTL: testTTL, MaxSandboxes: 1,
	})
	if err != nil {
		t.Fatal(err)
	}
	h, err := httpapi.New(httpapi.Config{Sandboxes: svc})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	put := func(chat string) *http.Response {
		req, _ := http.NewRequest(http.MethodPut, srv.URL+"/v1/chats/"+chat+"/sandbox", nil)
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { resp.Body.Close() })
		return resp
	}
	if resp := put("7a7a7a7a-1111-4d0e-9a61-6f0d2c8e4b1a"); resp.StatusCode != http.StatusCreated {
		t.Fatalf("first create: %s", resp.Status)
	}
	resp := put("7b7b7b7b-1111-4d0e-9a61-6f0d2c8e4b1a")
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("create over the cap: %s, Retry-After %q; want 429 with Retry-After", resp.Status, resp.Header.Get("Retry-After"))
	}
	if status, detail := problem(t, resp); status != http.StatusTooManyRequests || !strings.Contains(detail, "max_sandboxes") {
		t.Errorf("problem: %d %q; want one naming limits.max_sandboxes", status, detail)
	}
	if c, _, _ := runtime.Calls(); len(c) != 1 {
		t.Errorf("runtime creates = %d, want 1", len(c))
	}
	if n, _ := store.Count(context.Background()); n != 1 {
		t.Errorf("registry holds %d, want 1", n)
	}
}

func TestBufferedExecAnswersShareOneBudget(t *testing.T) {
	oneAnswer := 7*int64(testOutputCap) + 4<<10 // what one buffered answer reserves
	f := newFixture(t, func(c *httpapi.Config) {
		c.ExecOutputCap, c.MaxBufferedExecBytes = testOutputCap, oneAnswer
	})
	f.newSandbox(t, execChat)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	// One buffered command holds the whole budget while it runs.
	first := make(chan error, 1)
	go func() {
		_, err := f.client.Exec(ctx, execChat, client.ExecBody{Cmd: []string{"hang"}})
		first <- err
	}()
	select {
	case <-f.executor.Started():
	case <-time.After(10 * time.Second):
		t.Fatal("the first command did not start")
	}

	resp := f.request(t, http.MethodPost, "/v1/chats/"+execChat+"/sandbox/exec", `{"cmd":["echo","hi"]}`, nil)
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("second buffered exec: %s, Retry-After %q; want 429 with Retry-After", resp.Status, resp.Header.Get("Retry-After"))
	}
	if _, detail := problem(t, resp); !strings.Contains(detail, "application/x-ndjson") {
		t.Errorf("detail %q does not point to streaming", detail)
	}
	// Streaming holds no answer: it is not counted.
	var out strings.Builder
	if res, err := f.client.ExecStream(context.Background(), execChat, client.ExecBody{Cmd: []string{"echo", "streamed"}}, &out, io.Discard); err != nil || res.ExitCode != 0 || out.String() != "streamed\n" {
		t.Errorf("streaming exec while the budget is spent = %+v, %q, %v", res, out.String(), err)
	}

	// The first answer's share comes back when it ends (here: its client leaves).
	cancel()
	<-first
	if err := f.executor.WaitEnded(t); err == nil {
		t.Fatal("the first command was not killed")
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		got, err := f.client.Exec(context.Background(), execChat, client.ExecBody{Cmd: []string{"echo", "again"}})
		if err == nil {
			if got.Stdout != "again\n" {
				t.Errorf("exec after the budget came back = %+v", got)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the budget never came back: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestBufferedExecBudgetMustHoldOneAnswer(t *testing.T) {
	_, err := httpapi.New(httpapi.Config{Sandboxes: &lifecycle.Service{}, ExecOutputCap: 1 << 20, MaxBufferedExecBytes: 1 << 20})
	if err == nil {
		t.Fatal("a budget smaller than one answer was accepted")
	}
}

// slowBody sends one byte every interval, for ever (until closed).
type slowBody struct {
	interval time.Duration
	done     chan struct{}
}

func (b *slowBody) Read(p []byte) (int, error) {
	select {
	case <-time.After(b.interval):
		p[0] = 'x'
		return 1, nil
	case <-b.done:
		return 0, io.EOF
	}
}

func TestSlowUploadIsCutOffAndLeavesNothing(t *testing.T) {
	f := newFixture(t, func(c *httpapi.Config) {
		c.MinUploadRate, c.UploadGrace = 1024, 500*time.Millisecond
	})
	workspace := f.newSandbox(t, execChat)

	// At the rate, an upload goes through.
	if _, err := f.client.Upload(context.Background(), execChat, "fast.txt", strings.NewReader(strings.Repeat("y", 4096))); err != nil {
		t.Fatalf("an upload at full speed: %v", err)
	}

	body := &slowBody{interval: 100 * time.Millisecond, done: make(chan struct{})}
	defer close(body.done)
	req, err := http.NewRequest(http.MethodPut, f.srv.URL+"/v1/chats/"+execChat+"/sandbox/files?path=slow.txt", body)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+testToken)
	req.Header.Set("Content-Type", "application/octet-stream")
	start := time.Now()
	resp, err := f.srv.Client().Do(req)
	if err != nil {
		t.Fatalf("slow upload: %v; want an answer", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusRequestTimeout {
		t.Fatalf("slow upload: %s, want 408", resp.Status)
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("the slow upload held its handler %s", took)
	}
	entries, err := os.ReadDir(workspace)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if fmt.Sprint(names) != "[fast.txt]" {
		t.Errorf("workspace holds %v, want only fast.txt (no partial upload)", names)
	}
}
