package main

// The service-wide bounds as configured, through the real binary: each key reaches the
// part that enforces it, and it acts.

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/client"
	"github.com/sandboxd/sandboxd/internal/testing/waitfor"
)

// raw sends one request with the token and returns the answer, its body read.
func (s *server) raw(method, path, contentType, body string) (*http.Response, string) {
	s.t.Helper()
	req, err := http.NewRequest(method, s.base+path, strings.NewReader(body))
	if err != nil {
		s.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// server.max_connections: past the cap a connection is not served until one of those
// held closes.
func TestConnectionCapHoldsBackTheNextConnection(t *testing.T) {
	w := newWorld(t, "SANDBOXD_SERVER_MAX_CONNECTIONS=2")
	s := w.start()
	addr := strings.TrimPrefix(s.base, "http://")

	// Two keep-alive connections, each answered once (so each is accepted), held open.
	var held []net.Conn
	for i := range 2 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := fmt.Fprintf(c, "GET /healthz HTTP/1.1\r\nHost: sandboxd\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("connection %d: %v, %v", i, resp, err)
		}
		resp.Body.Close()
		held = append(held, c)
	}

	// A third waits: no answer while the two are held.
	third := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	answered := make(chan error, 1)
	go func() {
		resp, err := third.Get(s.base + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				err = fmt.Errorf("status %s", resp.Status)
			}
		}
		answered <- err
	}()
	select {
	case err := <-answered:
		t.Fatalf("a third connection was served past server.max_connections 2 (%v)", err)
	case <-time.After(2 * time.Second):
	}

	// One of the two closes: the third is served.
	_ = held[0].Close()
	select {
	case err := <-answered:
		if err != nil {
			t.Fatalf("the third connection, once one closed: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the third connection was not served after one of the two closed")
	}
}

// files.min_upload_rate: a client sending one byte a second is cut off with 408 (after the
// 10 s grace), and nothing of its upload is written.
func TestSlowUploadIsCutOffThroughTheBinary(t *testing.T) {
	w := newWorld(t, "SANDBOXD_FILES_MIN_UPLOAD_RATE=64")
	s := w.start()
	ctx := context.Background()
	chat := newChat()
	if _, _, err := s.api.Create(ctx, chat, client.CreateBody{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = s.api.Delete(context.Background(), chat) })

	pr, pw := io.Pipe()
	stop := make(chan struct{})
	defer close(stop)
	go func() { // one byte a second, of 1000 announced
		defer pw.Close()
		for {
			if _, err := pw.Write([]byte("x")); err != nil {
				return
			}
			select {
			case <-stop:
				return
			case <-time.After(time.Second):
			}
		}
	}()
	req, err := http.NewRequest(http.MethodPut, s.base+"/v1/chats/"+chat+"/sandbox/files?path=slow.txt", pr)
	if err != nil {
		t.Fatal(err)
	}
	req.ContentLength = 1000
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/octet-stream")
	start := time.Now()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("slow upload: %v, want an answer", err)
	}
	resp.Body.Close()
	took := time.Since(start)
	if resp.StatusCode != http.StatusRequestTimeout {
		t.Fatalf("slow upload: %s after %s, want 408", resp.Status, took)
	}
	if took > 30*time.Second {
		t.Errorf("the slow upload held its handler %s", took)
	}
	t.Logf("cut off after %s", took.Round(time.Millisecond))
	var cerr *client.Error
	if _, err := s.api.Download(ctx, chat, "slow.txt", io.Discard); !errors.As(err, &cerr) || cerr.Status != http.StatusNotFound {
		t.Errorf("download of the cut upload: %v, want 404 (nothing written)", err)
	}
}

// limits.max_sandboxes, exec.max_buffered_bytes, workspace.retention and
// docker.min_free_bytes, as configured, act.
func TestConfiguredBoundsAct(t *testing.T) {
	w := newWorld(t,
		"SANDBOXD_LIMITS_MAX_SANDBOXES=1",
		"SANDBOXD_EXEC_OUTPUT_CAP=1024",
		"SANDBOXD_EXEC_MAX_BUFFERED_BYTES=11264", // one buffered answer at that cap
		"SANDBOXD_WORKSPACE_RETENTION=1s",
		"SANDBOXD_SWEEP_INTERVAL=1s",
	)
	s := w.start()
	ctx := context.Background()
	volumes := filepath.Join(w.dataDir, "volumes")

	first, second := newChat(), newChat()
	if _, _, err := s.api.Create(ctx, first, client.CreateBody{}); err != nil {
		t.Fatal(err)
	}
	resp, body := s.raw(http.MethodPut, "/v1/chats/"+second+"/sandbox", "application/json", `{}`)
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" || !strings.Contains(body, `"busy"`) {
		t.Errorf("a create past limits.max_sandboxes 1: %s Retry-After %q %s, want 429 busy with Retry-After",
			resp.Status, resp.Header.Get("Retry-After"), body)
	}
	if got := len(w.labelled()); got != 1 {
		t.Errorf("%d containers, want 1 (nothing made past the cap)", got)
	}
	if _, err := os.Lstat(filepath.Join(volumes, second)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the refused chat's folder: %v, want none", err)
	}

	// One buffered answer fits the budget; a second one at the same time does not. The
	// long one tries again while a probe holds the budget, until it runs.
	slow := make(chan error, 1)
	go func() {
		for {
			_, err := s.api.Exec(ctx, first, client.ExecBody{Cmd: []string{"sleep", "5"}})
			if !errors.Is(err, client.ErrBusy) {
				slow <- err
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	waitfor.True(t, 30*time.Second, "a second buffered exec refused while the first holds the budget", func() bool {
		resp, body := s.raw(http.MethodPost, "/v1/chats/"+first+"/sandbox/exec", "application/json", `{"cmd":["true"]}`)
		return resp.StatusCode == http.StatusTooManyRequests && strings.Contains(body, "exec.max_buffered_bytes")
	})
	if err := <-slow; err != nil {
		t.Fatalf("the first buffered exec: %v", err)
	}
	if _, err := s.api.Exec(ctx, first, client.ExecBody{Cmd: []string{"true"}}); err != nil {
		t.Errorf("a buffered exec once the budget is back: %v", err)
	}

	// Retention: the chat's folder goes a second after its sandbox; a folder the caller
	// provided stays (workspace.retention_provided is not set).
	provided := filepath.Join(volumes, "provided")
	if err := os.Mkdir(provided, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(provided, 1000, 1000); err != nil {
		t.Fatal(err)
	}
	if _, err := s.api.Delete(ctx, first); err != nil {
		t.Fatal(err)
	}
	third := newChat()
	if _, _, err := s.api.Create(ctx, third, client.CreateBody{VolumeHostPath: provided}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.api.Delete(ctx, third); err != nil {
		t.Fatal(err)
	}
	waitfor.True(t, time.Minute, "the chat's folder removed by retention", func() bool {
		_, err := os.Lstat(filepath.Join(volumes, first))
		return errors.Is(err, fs.ErrNotExist)
	})
	time.Sleep(2 * time.Second) // two more sweeps
	if _, err := os.Stat(provided); err != nil {
		t.Errorf("the provided folder: %v, want it kept", err)
	}

	// A free-space floor above what the disk has: creates are 507 full, nothing made.
	s.stop(syscall.SIGTERM)
	w.cfg.Settings = append(w.cfg.Settings, "SANDBOXD_DOCKER_MIN_FREE_BYTES=9000000000000000000")
	s = w.start()
	fourth := newChat()
	_, _, err := s.api.Create(ctx, fourth, client.CreateBody{})
	var cerr *client.Error
	if !errors.As(err, &cerr) || cerr.Status != http.StatusInsufficientStorage || cerr.Code != "full" {
		t.Errorf("a create below docker.min_free_bytes: %v, want 507 full", err)
	}
	if _, err := os.Lstat(filepath.Join(volumes, fourth)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the refused chat's folder: %v, want none", err)
	}
	if got := len(w.labelled()); got != 0 {
		t.Errorf("%d containers, want none", got)
	}
}
