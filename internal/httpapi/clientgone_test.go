package httpapi_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/sandboxd/sandboxd/internal/httpapi"
	"github.com/sandboxd/sandboxd/internal/lifecycle"
	"github.com/sandboxd/sandboxd/internal/sandbox"
	"github.com/sandboxd/sandboxd/internal/testing/syncbuf"
	"github.com/sandboxd/sandboxd/internal/testing/waitfor"
)

// waitingSandboxes blocks every create until its caller leaves, as a create waiting for a
// busy chat's lock does.
type waitingSandboxes struct{ httpapi.Sandboxes }

func (waitingSandboxes) Create(ctx context.Context, _ lifecycle.CreateRequest) (sandbox.Session, lifecycle.Outcome, error) {
	<-ctx.Done()
	return sandbox.Session{}, lifecycle.Failed, fmt.Errorf("lock chat: %w", ctx.Err())
}

// A client that leaves is not a server error: logged as 499, never as a failure.
func TestAClientThatLeavesIsNotAnInternalError(t *testing.T) {
	var logs syncbuf.Buffer
	h, err := httpapi.New(httpapi.Config{Sandboxes: waitingSandboxes{}, Logger: slog.New(slog.NewJSONHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPut, srv.URL+"/v1/chats/11111111-1111-1111-1111-111111111111/sandbox", strings.NewReader(`{}`))
	req.Header.Set("Content-Type", "application/json")
	if resp, err := http.DefaultClient.Do(req); err == nil {
		resp.Body.Close()
		t.Fatal("the request was answered though the create never ended")
	}
	waitfor.True(t, 5*time.Second, "the request's record", func() bool {
		return strings.Contains(logs.String(), `"msg":"http_request"`)
	})
	out := logs.String()
	if !strings.Contains(out, `"status":499`) || strings.Contains(out, "request_failed") {
		t.Fatalf("log: %s", out)
	}
}

// slowSandboxes takes longer than huma's default body read timeout (5 s) over every
// create, as creates do on a loaded engine, and answers gets with not found; both
// report whether their caller was still there.
type slowSandboxes struct{ httpapi.Sandboxes }

func (slowSandboxes) Create(ctx context.Context, req lifecycle.CreateRequest) (sandbox.Session, lifecycle.Outcome, error) {
	select {
	case <-ctx.Done():
		return sandbox.Session{}, lifecycle.Failed, fmt.Errorf("create: %w", ctx.Err())
	case <-time.After(6 * time.Second):
	}
	now := time.Now()
	return sandbox.Session{ID: uuid.New(), ChatID: req.ChatID, ContainerID: "ctr", Status: sandbox.StatusRunning,
		CreatedAt: now, ExpiresAt: now.Add(time.Hour)}, lifecycle.Created, nil
}

func (slowSandboxes) Get(ctx context.Context, chatID uuid.UUID) (sandbox.Session, error) {
	if err := ctx.Err(); err != nil {
		return sandbox.Session{}, fmt.Errorf("get: %w", err)
	}
	return sandbox.Session{}, fmt.Errorf("chat %s: %w", chatID, sandbox.ErrNotFound)
}

// A create slower than 5 s, with a body or without, is answered (not 499) to a client
// that waits for it, and the keep-alive connection it came on serves the next request.
func TestASlowCreateIsAnsweredAndItsConnectionStaysUsable(t *testing.T) {
	h, err := httpapi.New(httpapi.Config{Sandboxes: slowSandboxes{}, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close) // after the parallel subtests
	for _, body := range []string{`{}`, ``} {
		t.Run(fmt.Sprintf("body %q", body), func(t *testing.T) {
			t.Parallel()
			hc := &http.Client{Transport: &http.Transport{MaxConnsPerHost: 1}}
			defer hc.CloseIdleConnections()
			path := srv.URL + "/v1/chats/" + uuid.NewString() + "/sandbox"
			send := func(method string, body io.Reader) (status int, reused bool) {
				t.Helper()
				req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{
					GotConn: func(info httptrace.GotConnInfo) { reused = info.Reused },
				}), method, path, body)
				if body != nil {
					req.Header.Set("Content-Type", "application/json")
				}
				resp, err := hc.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				_, _ = io.Copy(io.Discard, resp.Body)
				return resp.StatusCode, reused
			}
			var in io.Reader
			if body != "" {
				in = strings.NewReader(body)
			}
			if status, _ := send(http.MethodPut, in); status != http.StatusCreated {
				t.Fatalf("slow create: status %d, want 201", status)
			}
			status, reused := send(http.MethodGet, nil)
			if !reused {
				t.Fatalf("the next request did not come on the same connection")
			}
			if status != http.StatusNotFound {
				t.Fatalf("the next request on the connection: status %d, want 404", status)
			}
		})
	}
}
