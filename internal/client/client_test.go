package client_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"go.uber.org/goleak"

	"github.com/sandboxd/sandboxd/internal/client"
	"github.com/sandboxd/sandboxd/internal/sandbox"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestErrorMapsStatusesToSentinels(t *testing.T) {
	sentinels := []error{sandbox.ErrNotFound, sandbox.ErrConflict, sandbox.ErrInvalid, sandbox.ErrBusy, sandbox.ErrUnavailable}
	for _, tc := range []struct {
		status int
		want   error // nil: none of the sentinels
	}{
		{400, sandbox.ErrInvalid},
		{401, nil},
		{404, sandbox.ErrNotFound},
		{409, sandbox.ErrConflict},
		{413, sandbox.ErrInvalid},
		{415, sandbox.ErrInvalid},
		{422, sandbox.ErrInvalid},
		{429, sandbox.ErrBusy},
		{500, nil},
		{503, sandbox.ErrUnavailable},
	} {
		err := error(&client.Error{Status: tc.status})
		for _, s := range sentinels {
			if got := errors.Is(err, s); got != (s == tc.want) {
				t.Errorf("errors.Is(%d, %v) = %v", tc.status, s, got)
			}
		}
		if got := errors.Is(err, sandbox.ErrTooLarge); got != (tc.status == 413) {
			t.Errorf("errors.Is(%d, ErrTooLarge) = %v", tc.status, got)
		}
	}
}

func TestErrorMapsCodesToSentinels(t *testing.T) {
	expired := error(&client.Error{Status: 409, Code: "expired"})
	if !errors.Is(expired, sandbox.ErrExpired) || errors.Is(expired, sandbox.ErrConflict) {
		t.Errorf("expired: Is(ErrExpired) = %v, Is(ErrConflict) = %v; want true, false",
			errors.Is(expired, sandbox.ErrExpired), errors.Is(expired, sandbox.ErrConflict))
	}
	conflict := error(&client.Error{Status: 409, Code: "conflict"})
	if !errors.Is(conflict, sandbox.ErrConflict) || errors.Is(conflict, sandbox.ErrExpired) {
		t.Error("conflict: want ErrConflict only")
	}
}

func TestProblemsAndOtherAnswersBecomeErrors(t *testing.T) {
	var gotAuth, gotPath string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gotAuth, gotPath = r.Header.Get("Authorization"), r.URL.EscapedPath()
		if r.Method == http.MethodGet {
			w.Header().Set("Content-Type", "application/problem+json")
			w.WriteHeader(http.StatusNotFound)
			_, _ = io.WriteString(w, `{"status":404,"title":"Not Found","detail":"chat has no sandbox"}`)
			return
		}
		w.Header().Set("Content-Type", "text/plain")
		w.WriteHeader(http.StatusBadGateway)
		_, _ = io.WriteString(w, "upstream down\n")
	}))
	defer srv.Close()
	c, err := client.New(srv.URL+"/", "tok", srv.Client())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()

	_, err = c.Get(ctx, "a b/c")
	var p *client.Error
	if !errors.As(err, &p) || p.Status != 404 || p.Detail != "chat has no sandbox" || !errors.Is(err, sandbox.ErrNotFound) {
		t.Errorf("Get: %#v", err)
	}
	if gotAuth != "Bearer tok" || gotPath != "/v1/chats/a%20b%2Fc/sandbox" {
		t.Errorf("request carried auth %q path %q", gotAuth, gotPath)
	}
	if err.Error() != "404 Not Found: chat has no sandbox" {
		t.Errorf("Error() = %q", err)
	}

	_, err = c.Delete(ctx, "x")
	if !errors.As(err, &p) || p.Status != 502 || p.Detail != "upstream down" {
		t.Errorf("Delete: %#v", err)
	}
}

func TestNewRefusesBadURLs(t *testing.T) {
	for _, u := range []string{"", "127.0.0.1:8080", "ftp://host", "http://"} {
		if _, err := client.New(u, "", nil); err == nil {
			t.Errorf("New(%q): no error", u)
		}
	}
}
