package agent

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/sandboxd/sandboxd/internal/agentproto"
)

// The agent on its own: Serve on pipes, driven frame by frame as sandboxd would, running
// real processes on the test's machine.

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// host is the test's end of one Serve.
type host struct {
	t      *testing.T
	w      *io.PipeWriter
	frames chan agentproto.Frame
	served chan error
}

func newHost(t *testing.T, cfg Config) *host {
	t.Helper()
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	if cfg.Env == nil {
		cfg.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}
	}
	h := &host{t: t, w: inW, frames: make(chan agentproto.Frame, 1024), served: make(chan error, 1)}
	go func() {
		err := Serve(inR, outW, cfg)
		_ = outW.Close()
		_ = inR.Close() // what the test still writes fails
		h.served <- err
	}()
	go func() {
		r := agentproto.NewReader(outR)
		defer close(h.frames)
		for {
			f, err := r.ReadFrame()
			if err != nil {
				return
			}
			f.Payload = bytes.Clone(f.Payload)
			h.frames <- f
		}
	}()
	t.Cleanup(func() {
		_ = inW.Close()
		select {
		case <-h.served:
		case <-time.After(20 * time.Second):
			t.Error("Serve did not end after its input did")
		}
		for range h.frames {
		}
	})
	return h
}

func (h *host) send(t agentproto.Type, stream uint32, p []byte) {
	h.t.Helper()
	if _, err := h.w.Write(agentproto.AppendFrame(nil, t, stream, p)); err != nil {
		h.t.Fatalf("send %s: %v", t, err)
	}
}

func (h *host) start(stream uint32, m agentproto.StartMsg) {
	h.t.Helper()
	p, _ := json.Marshal(m)
	h.send(agentproto.Start, stream, p)
}

// next returns the next frame (of any stream).
func (h *host) next() agentproto.Frame {
	h.t.Helper()
	select {
	case f, ok := <-h.frames:
		if !ok {
			h.t.Fatal("the agent's output ended")
		}
		return f
	case <-time.After(20 * time.Second):
		h.t.Fatal("no frame from the agent in 20 s")
	}
	return agentproto.Frame{}
}

// result is what one stream said.
type result struct {
	failed         byte
	stdout, stderr string
	exit           agentproto.ExitMsg
	acked          int
}

// collect reads stream's frames until its Exit or Failed; frames of other streams fail
// the test.
func (h *host) collect(stream uint32) result {
	h.t.Helper()
	var r result
	for {
		f := h.next()
		if f.Stream != stream {
			h.t.Fatalf("frame %s of stream %d, want stream %d", f.Type, f.Stream, stream)
		}
		switch f.Type {
		case agentproto.Started:
		case agentproto.Stdout:
			r.stdout += string(f.Payload)
		case agentproto.Stderr:
			r.stderr += string(f.Payload)
		case agentproto.Ack:
			n, err := agentproto.ParseAck(f.Payload)
			if err != nil {
				h.t.Fatal(err)
			}
			r.acked += int(n)
		case agentproto.Failed:
			reason, _, err := agentproto.ParseFailed(f.Payload)
			if err != nil {
				h.t.Fatal(err)
			}
			r.failed = reason
			return r
		case agentproto.Exit:
			m, err := agentproto.ParseExit(f.Payload)
			if err != nil {
				h.t.Fatal(err)
			}
			r.exit = m
			return r
		default:
			h.t.Fatalf("unexpected %s frame", f.Type)
		}
	}
}

func TestCommandsRunAndReportHowTheyEnded(t *testing.T) {
	h := newHost(t, Config{})
	dir := t.TempDir()
	for i, tc := range []struct {
		name   string
		msg    agentproto.StartMsg
		want   result
		output bool // compare stdout and stderr
	}{
		{"output", agentproto.StartMsg{Argv: []string{"sh", "-c", "echo out; echo err >&2"}},
			result{stdout: "out\n", stderr: "err\n"}, true},
		{"exit code", agentproto.StartMsg{Argv: []string{"sh", "-c", "exit 3"}},
			result{exit: agentproto.ExitMsg{Code: 3}}, true},
		{"signal", agentproto.StartMsg{Argv: []string{"sh", "-c", "kill -TERM $$"}},
			result{exit: agentproto.ExitMsg{Code: 143, Signal: 15}}, true},
		{"env and workdir", agentproto.StartMsg{Argv: []string{"sh", "-c", `echo "$A $(pwd)"`}, Env: []string{"A=b c"}, Dir: dir},
			result{stdout: "b c " + dir + "\n"}, true},
		{"the env's PATH", agentproto.StartMsg{Argv: []string{"tool"}, Env: []string{"PATH=" + writeTool(t, dir)}},
			result{stdout: "tool ran\n"}, true},
		{"not found", agentproto.StartMsg{Argv: []string{"no-such-program-x"}},
			result{failed: agentproto.ReasonNotFound}, false},
		{"no workdir", agentproto.StartMsg{Argv: []string{"true"}, Dir: "/no/such/folder"},
			result{failed: agentproto.ReasonWorkdir}, false},
		{"output over the cap", agentproto.StartMsg{Argv: []string{"sh", "-c", "head -c 100000 /dev/zero; echo done >&2"}, OutputCap: 1000},
			result{exit: agentproto.ExitMsg{Truncated: true}}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id := uint32(i + 1)
			h.start(id, tc.msg)
			got := h.collect(id)
			if got.failed != tc.want.failed || got.exit != tc.want.exit {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
			if tc.output && (got.stdout != tc.want.stdout || got.stderr != tc.want.stderr) {
				t.Errorf("stdout %q, stderr %q; want %q, %q", got.stdout, got.stderr, tc.want.stdout, tc.want.stderr)
			}
			if tc.msg.OutputCap > 0 && int64(len(got.stdout)+len(got.stderr)) != tc.msg.OutputCap+1 {
				t.Errorf("forwarded %d bytes under a cap of %d, want the cap and one more", len(got.stdout)+len(got.stderr), tc.msg.OutputCap)
			}
		})
	}
}

func writeTool(t *testing.T, dir string) string {
	t.Helper()
	bin := dir + "/bin"
	if err := os.Mkdir(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin+"/tool", []byte("#!/bin/sh\necho tool ran\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return bin + ":/usr/bin:/bin"
}

func TestInputIsFedAndAcknowledged(t *testing.T) {
	h := newHost(t, Config{})
	h.start(1, agentproto.StartMsg{Argv: []string{"sh", "-c", "wc -c; cat >/dev/null"}, Stdin: true})
	chunk := bytes.Repeat([]byte("x"), agentproto.MaxPayload)
	// The window, in full, then more as it is acknowledged.
	for range agentproto.StdinWindow / agentproto.MaxPayload {
		h.send(agentproto.Stdin, 1, chunk)
	}
	acked := 0
	for acked < agentproto.MaxPayload {
		f := h.next()
		if f.Type == agentproto.Started {
			continue
		}
		if f.Type != agentproto.Ack {
			t.Fatalf("%s frame before any ack", f.Type)
		}
		n, _ := agentproto.ParseAck(f.Payload)
		acked += int(n)
	}
	h.send(agentproto.Stdin, 1, []byte("tail"))
	h.send(agentproto.StdinEOF, 1, nil)
	got := h.collect(1)
	want := strconv.Itoa(agentproto.StdinWindow + 4)
	if strings.TrimSpace(got.stdout) != want || got.exit.Code != 0 {
		t.Errorf("wc -c said %q (exit %d), want %s", got.stdout, got.exit.Code, want)
	}
	if acked+got.acked != agentproto.StdinWindow+4 {
		t.Errorf("acknowledged %d bytes, want %d", acked+got.acked, agentproto.StdinWindow+4)
	}
}

func TestInputPastTheWindowBreaksTheProtocol(t *testing.T) {
	h := newHost(t, Config{})
	h.start(1, agentproto.StartMsg{Argv: []string{"sleep", "1000"}, Stdin: true})
	chunk := bytes.Repeat([]byte("x"), agentproto.MaxPayload)
	for range agentproto.StdinWindow/agentproto.MaxPayload + 2 {
		if _, err := h.w.Write(agentproto.AppendFrame(nil, agentproto.Stdin, 1, chunk)); err != nil {
			break // Serve stopped reading
		}
	}
	select {
	case err := <-h.served:
		h.served <- err
		if !errors.Is(err, agentproto.ErrProtocol) {
			t.Errorf("Serve = %v, want ErrProtocol", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Serve went on")
	}
	assertNoProcess(t, "sleep 1000")
}

// The kills: each script leaves processes behind in its own way; the timeout, a Cancel,
// a new host's Hello and a silent host each kill the command and all of them.
func TestKillsTakeEverythingTheCommandStarted(t *testing.T) {
	scripts := []string{
		"exec sleep 1061",
		"sleep 1062 & sleep 1063",
		"(sleep 1066 &) ; sleep 1067",                             // an orphan
		"setsid sleep 1069 & sleep 1060",                          // a session of its own: found by its token
		"(setsid sh -c 'sleep 1061 & sleep 1062' &) ; sleep 1063", // a daemon
		"set -m; sleep 1064 & sleep 1065",                         // a group of its own
	}
	for _, how := range []string{"timeout", "cancel", "hello", "idle"} {
		t.Run(how, func(t *testing.T) {
			h := newHost(t, Config{IdleKill: 2 * time.Second})
			for i, script := range scripts {
				m := agentproto.StartMsg{Argv: []string{"sh", "-c", script}, Stdin: true} // told started
				if how == "timeout" {
					m.TimeoutMS = 500
				}
				h.start(uint32(i+1), m)
				if f := h.next(); f.Type != agentproto.Started {
					t.Fatalf("%q: %s frame, want started", script, f.Type)
				}
			}
			time.Sleep(300 * time.Millisecond) // let them start what they start
			switch how {
			case "cancel":
				for i := range scripts {
					h.send(agentproto.Cancel, uint32(i+1), nil)
				}
			case "hello":
				h.send(agentproto.Hello, 0, agentproto.HelloPayload(7))
				for f := h.next(); f.Type != agentproto.Ready; f = h.next() {
					if f.Type == agentproto.Exit {
						t.Fatalf("exit of stream %d before the ready", f.Stream)
					}
				}
			}
			if how != "hello" {
				exits := map[uint32]agentproto.ExitMsg{}
				for len(exits) < len(scripts) {
					f := h.next()
					if f.Type == agentproto.Exit {
						exits[f.Stream], _ = agentproto.ParseExit(f.Payload)
					}
				}
				for id, m := range exits {
					if m.TimedOut != (how == "timeout") || m.Canceled == (how == "timeout") || m.Code != 137 {
						t.Errorf("%q: %+v", scripts[id-1], m)
					}
				}
			}
			assertNoProcess(t, "sleep 10")
			if how == "hello" {
				// Nothing more of the old host's commands is said to the new one.
				h.send(agentproto.Ping, 0, make([]byte, 8))
				if f := h.next(); f.Type != agentproto.Pong {
					t.Errorf("%s frame of stream %d after the hello, want only the pong", f.Type, f.Stream)
				}
			}
		})
	}
}

// assertNoProcess fails unless, within a few seconds, no live process of this machine
// has marker in its command line.
func assertNoProcess(t *testing.T, marker string) {
	t.Helper()
	var left []string
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		left = left[:0]
		ents, _ := os.ReadDir("/proc")
		for _, e := range ents {
			pid, err := strconv.Atoi(e.Name())
			if err != nil {
				continue
			}
			state, _, ok := procStat(pid)
			cmdline, _ := os.ReadFile("/proc/" + e.Name() + "/cmdline")
			if ok && state != 'Z' && strings.Contains(strings.ReplaceAll(string(cmdline), "\x00", " "), marker) {
				left = append(left, e.Name()+": "+string(cmdline))
			}
		}
		if len(left) == 0 {
			return
		}
	}
	t.Errorf("processes left: %q", left)
}

func TestConcurrentCommandsKeepTheirOwnOutput(t *testing.T) {
	h := newHost(t, Config{})
	const n = 16
	for i := range n {
		h.start(uint32(i+1), agentproto.StartMsg{Argv: []string{"sh", "-c", "for j in 1 2 3; do echo " + strconv.Itoa(i) + "; done"}})
	}
	out := map[uint32]string{}
	ended := 0
	var mu sync.Mutex
	for ended < n {
		f := h.next()
		mu.Lock()
		switch f.Type {
		case agentproto.Stdout:
			out[f.Stream] += string(f.Payload)
		case agentproto.Exit:
			ended++
		}
		mu.Unlock()
	}
	for i := range n {
		s := strconv.Itoa(i)
		if want := s + "\n" + s + "\n" + s + "\n"; out[uint32(i+1)] != want {
			t.Errorf("stream %d: %q, want %q", i+1, out[uint32(i+1)], want)
		}
	}
}

func TestHostileFramesEndServeAndKillItsCommands(t *testing.T) {
	for name, raw := range map[string][]byte{
		"garbage":           []byte("GET / HTTP/1.1\r\n\r\n"),
		"agent's own frame": agentproto.AppendFrame(nil, agentproto.Exit, 1, agentproto.ExitMsg{}.Payload()),
		"bad start":         agentproto.AppendFrame(nil, agentproto.Start, 9, []byte(`{"argv":[]}`)),
		"stream reused":     agentproto.AppendFrame(nil, agentproto.Start, 1, []byte(`{"argv":["true"]}`)),
		"input unasked":     agentproto.AppendFrame(nil, agentproto.Stdin, 1, []byte("x")),
	} {
		t.Run(name, func(t *testing.T) {
			h := newHost(t, Config{})
			// The agent reads no frame before the command of the one before started.
			h.start(1, agentproto.StartMsg{Argv: []string{"sleep", "1077"}})
			_, _ = h.w.Write(raw)
			select {
			case err := <-h.served:
				h.served <- err
				if !errors.Is(err, agentproto.ErrProtocol) {
					t.Errorf("Serve = %v, want ErrProtocol", err)
				}
			case <-time.After(20 * time.Second):
				t.Fatal("Serve went on")
			}
			assertNoProcess(t, "sleep 1077")
		})
	}
}

func TestTooManyCommandsAreRefused(t *testing.T) {
	h := newHost(t, Config{MaxStreams: 1})
	h.start(1, agentproto.StartMsg{Argv: []string{"sleep", "1078"}, Stdin: true}) // told started
	if f := h.next(); f.Type != agentproto.Started {
		t.Fatalf("%s frame", f.Type)
	}
	h.start(2, agentproto.StartMsg{Argv: []string{"true"}})
	if got := h.collect(2); got.failed != agentproto.ReasonBusy {
		t.Errorf("second command: %+v, want refused as busy", got)
	}
	h.send(agentproto.Cancel, 1, nil)
	if got := h.collect(1); !got.exit.Canceled {
		t.Errorf("first: %+v", got)
	}
}

// Only a command that takes input is told started (the host sends the input then); any
// other's first frame is its output or its end: one frame less through the engine.
func TestOnlyACommandThatTakesInputIsToldStarted(t *testing.T) {
	h := newHost(t, Config{})
	h.start(1, agentproto.StartMsg{Argv: []string{"true"}})
	if f := h.next(); f.Type != agentproto.Exit || f.Stream != 1 {
		t.Errorf("without input: first frame %s, want exit", f.Type)
	}
	h.start(2, agentproto.StartMsg{Argv: []string{"true"}, Stdin: true})
	if f := h.next(); f.Type != agentproto.Started || f.Stream != 2 {
		t.Errorf("with input: first frame %s, want started", f.Type)
	}
	h.send(agentproto.StdinEOF, 2, nil)
	h.collect(2)
}
