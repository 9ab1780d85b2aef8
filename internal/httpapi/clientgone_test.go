package httpapi_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

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
