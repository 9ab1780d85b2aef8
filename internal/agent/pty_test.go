package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/internal/agentproto"
)

// terminal is the test's side of one PTY stream: what it typed and read.
type terminal struct {
	h    *host
	id   uint32
	out  strings.Builder
	exit *agentproto.ExitMsg
}

func (h *host) openPTY(id uint32, m agentproto.PTYMsg) *terminal {
	h.t.Helper()
	p, _ := json.Marshal(m)
	h.send(agentproto.OpenPTY, id, p)
	return &terminal{h: h, id: id}
}

// read takes the next frame of the terminal's stream: true until its Exit.
func (term *terminal) read() bool {
	t := term.h.t
	t.Helper()
	f := term.h.next()
	if f.Stream != term.id {
		t.Fatalf("frame %s of stream %d, want stream %d", f.Type, f.Stream, term.id)
	}
	switch f.Type {
	case agentproto.Started, agentproto.Ack:
	case agentproto.Stdout:
		term.out.Write(f.Payload)
	case agentproto.Exit:
		m, err := agentproto.ParseExit(f.Payload)
		if err != nil {
			t.Fatal(err)
		}
		term.exit = &m
		return false
	default:
		t.Fatalf("unexpected %s frame on a terminal", f.Type)
	}
	return true
}

// typeLine types line and a carriage return, and reads until the output after it
// shows want.
func (term *terminal) typeLine(line, want string) {
	term.h.t.Helper()
	from := term.out.Len()
	term.h.send(agentproto.Stdin, term.id, []byte(line+"\r"))
	for !strings.Contains(term.out.String()[from:], want) {
		if !term.read() {
			term.h.t.Fatalf("the terminal ended before %q; output:\n%s", want, term.out.String())
		}
	}
}

// end reads until the terminal's Exit.
func (term *terminal) end() agentproto.ExitMsg {
	term.h.t.Helper()
	for term.read() {
	}
	return *term.exit
}

// A shell on a terminal: it is interactive, its input is typed, its size is the one
// asked and then the one resized to, TERM is what the host says, and its exit status
// ends the stream. Hand it several lines at once and a line split in two frames: a
// terminal is a byte stream.
func TestATerminalRunsAnInteractiveShell(t *testing.T) {
	h := newHost(t, Config{})
	dir := t.TempDir()
	term := h.openPTY(1, agentproto.PTYMsg{Argv: []string{"sh"}, Env: []string{"TERM=xterm-256color", "PS1=prompt$ "}, Dir: dir, Cols: 100, Rows: 30})
	term.typeLine("stty size; tty; echo $TERM; pwd", dir)
	if out := term.out.String(); !strings.Contains(out, "30 100") || !strings.Contains(out, "/dev/pts/") || !strings.Contains(out, dir) {
		t.Errorf("output:\n%s\nwant the size 30 100, a /dev/pts terminal and the folder %s", out, dir)
	}
	h.send(agentproto.Resize, 1, agentproto.ResizePayload(120, 40))
	term.typeLine("stty size", "40 120")
	h.send(agentproto.Stdin, 1, []byte("echo $((6*"))
	h.send(agentproto.Stdin, 1, []byte("7))\r"))
	term.typeLine("", "42")
	// The shell leads its session, its group and its terminal's foreground group: job
	// control works. (/proc/pid/stat: pgrp, session, tty_nr, tpgid.)
	from := term.out.Len()
	term.typeLine(`echo "ids $$ $(cut -d' ' -f5,6,8 /proc/$$/stat) $((1+1))"`, " 2")
	var pid, pgrp, sid, tpgid int
	if _, err := fmt.Sscanf(term.out.String()[strings.LastIndex(term.out.String(), "ids "):], "ids %d %d %d %d 2", &pid, &pgrp, &sid, &tpgid); err != nil ||
		pgrp != pid || sid != pid || tpgid != pid {
		t.Errorf("the shell's ids (pid, group, session, terminal's group): %q, want one pid", term.out.String()[from:])
	}
	h.send(agentproto.StdinEOF, 1, nil) // stops the input, not the shell
	h.send(agentproto.Resize, 1, agentproto.ResizePayload(90, 20))
	h.send(agentproto.Cancel, 1, nil)
	if m := term.end(); !m.Canceled {
		t.Errorf("exit %+v: the end of its input ended the terminal, or the cancel did not", m)
	}

	term = h.openPTY(2, agentproto.PTYMsg{Argv: []string{"sh"}, Cols: 80, Rows: 24})
	term.typeLine("exit 3", "exit 3")
	if m := term.end(); m != (agentproto.ExitMsg{Code: 3}) {
		t.Errorf("exit: %+v, want code 3", m)
	}
}

// A Cancel (the client left), a new host and the shell's own end each kill the shell and
// everything started from its terminal, whichever session or group it moved to.
func TestATerminalIsKilledWithAllItStarted(t *testing.T) {
	for _, how := range []string{"cancel", "hello", "exit"} {
		t.Run(how, func(t *testing.T) {
			h := newHost(t, Config{})
			term := h.openPTY(1, agentproto.PTYMsg{Argv: []string{"sh"}, Cols: 80, Rows: 24})
			term.typeLine("sleep 7301 & setsid sleep 7302 & (sleep 7303 &); echo sta''rted", "started") // quoted: the echo of the typed line is not the answer
			switch how {
			case "cancel":
				h.send(agentproto.Cancel, 1, nil)
				if m := term.end(); !m.Canceled || m.Code != 137 && m.Code != 129 {
					t.Errorf("exit %+v, want canceled, killed", m)
				}
			case "hello":
				h.send(agentproto.Hello, 0, agentproto.HelloPayload(1))
				for f := h.next(); f.Type != agentproto.Ready; f = h.next() {
				}
			case "exit":
				term.typeLine("exit 0", "exit")
				if m := term.end(); m != (agentproto.ExitMsg{}) {
					t.Errorf("exit %+v, want 0", m)
				}
			}
			assertNoProcess(t, "sleep 730")
		})
	}
}

// A terminal counts among the commands, and what cannot start fails as a command does.
func TestATerminalThatCannotStartFails(t *testing.T) {
	h := newHost(t, Config{MaxStreams: 1})
	h.openPTY(1, agentproto.PTYMsg{Argv: []string{"no-such-shell-x"}, Cols: 80, Rows: 24})
	if got := h.collect(1); got.failed != agentproto.ReasonNotFound {
		t.Errorf("no such program: %+v", got)
	}
	h.openPTY(2, agentproto.PTYMsg{Argv: []string{"sh"}, Dir: "/no/such/folder", Cols: 80, Rows: 24})
	if got := h.collect(2); got.failed != agentproto.ReasonWorkdir {
		t.Errorf("no such folder: %+v", got)
	}
	h.start(3, agentproto.StartMsg{Argv: []string{"sleep", "7304"}, Stdin: true}) // told started
	if f := h.next(); f.Type != agentproto.Started {
		t.Fatalf("%s frame", f.Type)
	}
	h.openPTY(4, agentproto.PTYMsg{Argv: []string{"sh"}, Cols: 80, Rows: 24})
	if got := h.collect(4); got.failed != agentproto.ReasonBusy {
		t.Errorf("past MaxStreams: %+v, want refused as busy", got)
	}
	h.send(agentproto.Cancel, 3, nil)
	h.collect(3)
}

// The host's terminal frames are checked as any: a violation ends Serve, and kills the
// terminal with the rest.
func TestHostileTerminalFramesEndServe(t *testing.T) {
	for name, raw := range map[string][]byte{
		"resize of a command":  agentproto.AppendFrame(nil, agentproto.Resize, 2, agentproto.ResizePayload(80, 24)),
		"resize to nothing":    agentproto.AppendFrame(nil, agentproto.Resize, 1, agentproto.ResizePayload(0, 24)),
		"resize too large":     agentproto.AppendFrame(nil, agentproto.Resize, 1, agentproto.ResizePayload(80, agentproto.MaxTermSide+1)),
		"short resize":         {byte(agentproto.Resize), 0, 0, 0, 1, 0, 0, 0, 2, 0, 80},
		"terminal of no size":  agentproto.AppendFrame(nil, agentproto.OpenPTY, 3, []byte(`{"argv":["sh"]}`)),
		"terminal of no argv":  agentproto.AppendFrame(nil, agentproto.OpenPTY, 3, []byte(`{"argv":[],"cols":80,"rows":24}`)),
		"terminal not JSON":    agentproto.AppendFrame(nil, agentproto.OpenPTY, 3, []byte{0xff, 0}),
		"terminal stream used": agentproto.AppendFrame(nil, agentproto.OpenPTY, 1, []byte(`{"argv":["sh"],"cols":80,"rows":24}`)),
	} {
		t.Run(name, func(t *testing.T) {
			h := newHost(t, Config{})
			term := h.openPTY(1, agentproto.PTYMsg{Argv: []string{"sh"}, Cols: 80, Rows: 24})
			term.typeLine("sleep 7305 & echo sta''rted", "started") // quoted: the echo of the typed line is not the answer
			h.start(2, agentproto.StartMsg{Argv: []string{"sleep", "7306"}})
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
			assertNoProcess(t, "sleep 730")
		})
	}
}
