package client_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/sandboxd/sandboxd/client"
)

func TestErrorMapsStatusesToSentinels(t *testing.T) {
	sentinels := []error{client.ErrNotFound, client.ErrConflict, client.ErrInvalid, client.ErrBusy, client.ErrUnavailable}
	for _, tc := range []struct {
		status int
		want   error // nil: none of the sentinels
	}{
		{400, client.ErrInvalid},
		{401, nil},
		{404, client.ErrNotFound},
		{409, client.ErrConflict},
		{413, client.ErrInvalid},
		{415, client.ErrInvalid},
		{422, client.ErrInvalid},
		{429, client.ErrBusy},
		{500, nil},
		{503, client.ErrUnavailable},
	} {
		err := error(&client.Error{Status: tc.status})
		for _, s := range sentinels {
			if got := errors.Is(err, s); got != (s == tc.want) {
				t.Errorf("errors.Is(%d, %v) = %v", tc.status, s, got)
			}
		}
		if got := errors.Is(err, client.ErrTooLarge); got != (tc.status == 413) {
			t.Errorf("errors.Is(%d, ErrTooLarge) = %v", tc.status, got)
		}
	}
}

func TestErrorMapsCodesToSentinels(t *testing.T) {
	expired := error(&client.Error{Status: 409, Code: "expired"})
	if !errors.Is(expired, client.ErrExpired) || errors.Is(expired, client.ErrConflict) {
		t.Errorf("expired: Is(ErrExpired) = %v, Is(ErrConflict) = %v; want true, false",
			errors.Is(expired, client.ErrExpired), errors.Is(expired, client.ErrConflict))
	}
	conflict := error(&client.Error{Status: 409, Code: "conflict"})
	if !errors.Is(conflict, client.ErrConflict) || errors.Is(conflict, client.ErrExpired) || errors.Is(conflict, client.ErrWorkspaceInUse) {
		t.Error("conflict: want ErrConflict only")
	}
	inUse := error(&client.Error{Status: 409, Code: "workspace_in_use"})
	if !errors.Is(inUse, client.ErrWorkspaceInUse) || !errors.Is(inUse, client.ErrConflict) || errors.Is(inUse, client.ErrExpired) {
		t.Error("workspace_in_use: want ErrWorkspaceInUse and ErrConflict")
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
	if !errors.As(err, &p) || p.Status != 404 || p.Detail != "chat has no sandbox" || !errors.Is(err, client.ErrNotFound) {
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
