package httpapi_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/client"
)

// newSandbox creates a sandbox for chat over a fresh workspace folder and returns it.
func (f *fixture) newSandbox(t *testing.T, chat string) string {
	t.Helper()
	workspace := t.TempDir()
	if _, _, err := f.client.Create(context.Background(), chat, client.CreateBody{VolumeHostPath: workspace}); err != nil {
		t.Fatal(err)
	}
	return workspace
}

const execChat = "3c3c3c3c-1111-4d0e-9a61-6f0d2c8e4b1a"

func TestExecAnswersOnceTheCommandEnds(t *testing.T) {
	f := newFixture(t)
	f.newSandbox(t, execChat)
	ctx := context.Background()

	got, err := f.client.Exec(ctx, execChat, client.ExecBody{Cmd: []string{"echo", "hello", "world"}})
	want := client.ExecResult{ExitCode: 0, Stdout: "hello world\n", DurationMS: testExecTook.Milliseconds()}
	if err != nil || got != want {
		t.Errorf("echo = %+v, %v; want %+v", got, err, want)
	}

	got, err = f.client.Exec(ctx, execChat, client.ExecBody{Cmd: []string{"exit", "3", "", "oops"}})
	want = client.ExecResult{ExitCode: 3, Stderr: "oops", DurationMS: testExecTook.Milliseconds()}
	if err != nil || got != want {
		t.Errorf("fail = %+v, %v; want %+v", got, err, want)
	}

	got, err = f.client.Exec(ctx, execChat, client.ExecBody{Cmd: []string{"cat"}, Stdin: "to stdin\x00é"})
	if err != nil || got.Stdout != "to stdin\x00é" {
		t.Errorf("cat = %+v, %v; want stdin echoed", got, err)
	}

	got, err = f.client.Exec(ctx, execChat, client.ExecBody{
		Cmd: []string{"env"}, Workdir: "/workspace/src", Env: map[string]string{"B": "2", "A": "1"},
	})
	if err != nil || got.Stdout != "workdir=/workspace/src\nA=1\nB=2\n" {
		t.Errorf("env = %q, %v", got.Stdout, err)
	}

	got, err = f.client.Exec(ctx, execChat, client.ExecBody{Cmd: []string{"flood", strconv.Itoa(4 * testOutputCap)}})
	if err != nil || !got.Truncated || len(got.Stdout) != testOutputCap || got.ExitCode != 0 {
		t.Errorf("flood: truncated=%v with %d bytes, exit %d, %v; want truncated at %d",
			got.Truncated, len(got.Stdout), got.ExitCode, err, testOutputCap)
	}
}

func TestExecTimeoutKillsTheCommand(t *testing.T) {
	f := newFixture(t)
	f.newSandbox(t, execChat)

	start := time.Now()
	got, err := f.client.Exec(context.Background(), execChat, client.ExecBody{Cmd: []string{"hang"}, TimeoutS: 1})
	if err != nil || !got.TimedOut || got.ExitCode != -1 || got.Stdout != "started\n" {
		t.Fatalf("hang with timeout_s 1 = %+v, %v; want timed out with exit -1", got, err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("the timeout of 1s took %s", took)
	}
	if err := f.executor.WaitEnded(t); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("the command's ctx ended with %v, want its deadline", err)
	}
}

func TestExecIsRefused(t *testing.T) {
	f := newFixture(t)
	f.newSandbox(t, execChat)
	const expiring = "4d4d4d4d-1111-4d0e-9a61-6f0d2c8e4b1a"
	f.newSandbox(t, expiring)
	f.clock.Advance(testTTL) // both expire...
	if _, err := f.client.Keepalive(context.Background(), execChat, testTTL); err == nil {
		t.Fatal("keepalive of an expired sandbox worked")
	}
	f.newSandbox(t, execChat) // ...and execChat is replaced
	path := func(chat string) string { return "/v1/chats/" + chat + "/sandbox/exec" }

	for _, tc := range []struct {
		name, chat, body string
		want             int
	}{
		{"no sandbox", "5e5e5e5e-1111-4d0e-9a61-6f0d2c8e4b1a", `{"cmd":["echo"]}`, http.StatusNotFound},
		{"expired sandbox", expiring, `{"cmd":["echo"]}`, http.StatusConflict},
		{"bad chat id", "nope", `{"cmd":["echo"]}`, http.StatusUnprocessableEntity},
		{"no command", execChat, `{"cmd":[]}`, http.StatusUnprocessableEntity},
		{"empty command", execChat, `{"cmd":[""]}`, http.StatusUnprocessableEntity},
		{"unknown field", execChat, `{"cmd":["echo"],"shell":true}`, http.StatusUnprocessableEntity},
		{"timeout over the maximum", execChat, fmt.Sprintf(`{"cmd":["echo"],"timeout_s":%d}`, int(testMaxTimeout.Seconds())+1), http.StatusUnprocessableEntity},
		{"timeout that overflows", execChat, `{"cmd":["echo"],"timeout_s":9223372036854775807}`, http.StatusUnprocessableEntity},
		{"negative timeout", execChat, `{"cmd":["echo"],"timeout_s":-1}`, http.StatusUnprocessableEntity},
		{"fractional timeout", execChat, `{"cmd":["echo"],"timeout_s":1.5}`, http.StatusUnprocessableEntity},
	} {
		for _, accept := range []string{"application/json", "application/x-ndjson"} {
			resp := f.request(t, http.MethodPost, path(tc.chat), tc.body, map[string]string{"Accept": accept})
			if resp.StatusCode != tc.want || resp.Header.Get("Content-Type") != "application/problem+json" {
				t.Errorf("%s (%s): %d %s, want %d problem", tc.name, accept, resp.StatusCode, resp.Header.Get("Content-Type"), tc.want)
			}
		}
	}
	if resp := f.request(t, http.MethodPost, path(execChat), `{"cmd":["echo"]}`, map[string]string{"Authorization": ""}); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("exec without a token: %d, want 401", resp.StatusCode)
	}
	_, err := f.client.ExecStream(context.Background(), expiring, client.ExecBody{Cmd: []string{"echo"}}, nil, nil)
	if problem := (*client.Error)(nil); !errors.As(err, &problem) || problem.Status != http.StatusConflict {
		t.Errorf("ExecStream on an expired sandbox: %v, want a 409 problem", err)
	}
}

// event is a line of the ndjson answer as the test reads it.
type event struct {
	Type       string `json:"type"`
	Data       string `json:"data"`
	ExitCode   *int   `json:"exit_code"`
	TimedOut   *bool  `json:"timed_out"`
	Truncated  *bool  `json:"truncated"`
	DurationMS *int64 `json:"duration_ms"`
	Status     int    `json:"status"`
	Detail     string `json:"detail"`
}

// nextEvent reads one event, failing the test when none comes within a few seconds.
func nextEvent(t *testing.T, dec *json.Decoder) event {
	t.Helper()
	got := make(chan event, 1)
	failed := make(chan error, 1)
	go func() {
		var ev event
		if err := dec.Decode(&ev); err != nil {
			failed <- err
			return
		}
		got <- ev
	}()
	select {
	case ev := <-got:
		return ev
	case err := <-failed:
		t.Fatalf("reading an event: %v", err)
	case <-time.After(5 * time.Second):
		t.Fatal("no event within 5s: the stream is held back")
	}
	return event{}
}

func TestExecStreamsEventsAsTheyCome(t *testing.T) {
	f := newFixture(t)
	f.newSandbox(t, execChat)
	opened := false
	t.Cleanup(func() {
		if !opened {
			f.executor.Release()
		}
	})

	resp := f.request(t, http.MethodPost, "/v1/chats/"+execChat+"/sandbox/exec", `{"cmd":["gate"]}`,
		map[string]string{"Accept": "application/json;q=0.5, application/x-ndjson"})
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/x-ndjson" {
		t.Fatalf("stream: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	dec := json.NewDecoder(resp.Body)
	// The command is still waiting at its gate: this event came before it ended.
	if ev := nextEvent(t, dec); ev.Type != "stdout" || ev.Data != "before\n" || ev.ExitCode != nil {
		t.Fatalf("first event = %+v, want stdout before", ev)
	}
	f.executor.Release()
	opened = true
	if ev := nextEvent(t, dec); ev.Type != "stdout" || ev.Data != "after\n" {
		t.Fatalf("second event = %+v, want stdout after", ev)
	}
	ev := nextEvent(t, dec)
	if ev.Type != "exit" || ev.ExitCode == nil || *ev.ExitCode != 0 || ev.TimedOut == nil || *ev.TimedOut ||
		ev.Truncated == nil || *ev.Truncated || ev.DurationMS == nil || *ev.DurationMS != testExecTook.Milliseconds() {
		t.Fatalf("last event = %+v, want exit 0 after %s", ev, testExecTook)
	}
	if err := dec.Decode(&ev); !errors.Is(err, io.EOF) {
		t.Errorf("after the exit event: %v, want the end of the stream", err)
	}
}

// writerFunc is an io.Writer made of a function.
type writerFunc func([]byte) (int, error)

func (w writerFunc) Write(p []byte) (int, error) { return w(p) }

func TestExecStreamThroughTheClient(t *testing.T) {
	f := newFixture(t)
	f.newSandbox(t, execChat)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	// The gate opens once the client has seen the first output, which therefore came
	// before the command ended.
	var stdout strings.Builder
	out := writerFunc(func(p []byte) (int, error) {
		f.executor.Release()
		return stdout.Write(p)
	})
	got, err := f.client.ExecStream(ctx, execChat, client.ExecBody{Cmd: []string{"gate"}}, out, nil)
	if err != nil || got.ExitCode != 0 || stdout.String() != "before\nafter\n" {
		t.Fatalf("ExecStream(gate) = %+v, %v, stdout %q", got, err, stdout.String())
	}

	var stderr strings.Builder
	got, err = f.client.ExecStream(ctx, execChat, client.ExecBody{Cmd: []string{"exit", "42", "", "bad"}}, nil, &stderr)
	if err != nil || got.ExitCode != 42 || stderr.String() != "bad" {
		t.Errorf("ExecStream(fail) = %+v, %v, stderr %q", got, err, stderr.String())
	}

	stdout.Reset()
	got, err = f.client.ExecStream(ctx, execChat, client.ExecBody{Cmd: []string{"hang"}, TimeoutS: 1}, &stdout, nil)
	if err != nil || !got.TimedOut || got.ExitCode != -1 || stdout.String() != "started\n" {
		t.Errorf("ExecStream(hang, 1s) = %+v, %v", got, err)
	}
	f.executor.WaitEnded(t)

	stdout.Reset()
	got, err = f.client.ExecStream(ctx, execChat, client.ExecBody{Cmd: []string{"flood", strconv.Itoa(3 * testOutputCap)}}, &stdout, nil)
	if err != nil || !got.Truncated || stdout.Len() != testOutputCap {
		t.Errorf("ExecStream(flood) = %+v, %v, %d bytes", got, err, stdout.Len())
	}

	// Events carry whole characters, however the output was cut.
	stdout.Reset()
	_, err = f.client.ExecStream(ctx, execChat, client.ExecBody{Cmd: []string{"split"}}, &stdout, nil)
	if err != nil || stdout.String() != "hé!" {
		t.Errorf("ExecStream(split) = %v, stdout %q; want hé!", err, stdout.String())
	}

	// A failure after the output began comes as an error event with its status.
	stdout.Reset()
	_, err = f.client.ExecStream(ctx, execChat, client.ExecBody{Cmd: []string{"vanish"}}, &stdout, nil)
	if !errors.Is(err, client.ErrNotFound) || stdout.String() != "started\n" {
		t.Errorf("ExecStream(vanish) = %v, stdout %q; want a 404 error after the output", err, stdout.String())
	}
}

func TestClientThatLeavesKillsItsCommand(t *testing.T) {
	f := newFixture(t)
	f.newSandbox(t, execChat)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	// The client leaves as soon as the command has started.
	leave := writerFunc(func(p []byte) (int, error) {
		cancel()
		return len(p), nil
	})
	_, err := f.client.ExecStream(ctx, execChat, client.ExecBody{Cmd: []string{"hang"}, TimeoutS: 50}, leave, nil)
	if !errors.Is(err, context.Canceled) {
		t.Errorf("ExecStream after leaving: %v, want context.Canceled", err)
	}
	if err := f.executor.WaitEnded(t); !errors.Is(err, context.Canceled) {
		t.Errorf("the command's ctx ended with %v, want canceled (not its 50s timeout)", err)
	}

	// The buffered form too.
	<-f.executor.Started()
	ctx, cancel = context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := f.client.Exec(ctx, execChat, client.ExecBody{Cmd: []string{"hang"}, TimeoutS: 50})
		done <- err
	}()
	<-f.executor.Started()
	cancel()
	if err := f.executor.WaitEnded(t); !errors.Is(err, context.Canceled) {
		t.Errorf("the buffered command's ctx ended with %v, want canceled", err)
	}
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("Exec after leaving: %v", err)
	}
}
