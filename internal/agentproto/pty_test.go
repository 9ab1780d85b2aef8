package agentproto

import (
	"bytes"
	"encoding/json"
	"errors"
	"testing"
)

func TestTerminalFramesRoundTrip(t *testing.T) {
	open, _ := json.Marshal(PTYMsg{Argv: []string{"/bin/sh"}, Env: []string{"TERM=xterm"}, Cols: 80, Rows: 24})
	var b []byte
	b = AppendFrame(b, OpenPTY, 5, open)
	b = AppendFrame(b, Resize, 5, ResizePayload(MaxTermSide, 1))
	r := NewReader(bytes.NewReader(b))
	f, err := r.ReadFrame()
	if err != nil || f.Type != OpenPTY || f.Stream != 5 {
		t.Fatalf("open-pty: %+v, %v", f, err)
	}
	if m, err := ParsePTY(f.Payload); err != nil || m.Argv[0] != "/bin/sh" || m.Env[0] != "TERM=xterm" || m.Cols != 80 || m.Rows != 24 {
		t.Errorf("open-pty: %+v, %v", m, err)
	}
	if f, err = r.ReadFrame(); err != nil || f.Type != Resize {
		t.Fatalf("resize: %+v, %v", f, err)
	}
	if c, rows, err := ParseResize(f.Payload); err != nil || c != MaxTermSide || rows != 1 {
		t.Errorf("resize: %dx%d, %v", c, rows, err)
	}
	if OpenPTY.String() != "open-pty" || Resize.String() != "resize" {
		t.Errorf("names %q, %q", OpenPTY, Resize)
	}
}

func TestHostileTerminalMessagesAreRefused(t *testing.T) {
	for name, raw := range map[string][]byte{
		"resize on stream 0": {byte(Resize), 0, 0, 0, 0, 0, 0, 0, 4},
		"long resize":        {byte(Resize), 0, 0, 0, 1, 0, 0, 0, 5},
		"empty open-pty":     {byte(OpenPTY), 0, 0, 0, 1, 0, 0, 0, 0},
		"open-pty too large": {byte(OpenPTY), 0, 0, 0, 1, 0, 1, 0, 1},
		"next type unknown":  {byte(Resize + 1), 0, 0, 0, 1, 0, 0, 0, 0},
	} {
		if _, err := NewReader(bytes.NewReader(raw)).ReadFrame(); !errors.Is(err, ErrProtocol) {
			t.Errorf("%s: %v, want ErrProtocol", name, err)
		}
	}
	for _, p := range []string{`{"argv":["sh"]}`, `{"argv":["sh"],"cols":80,"rows":0}`, `{"argv":["sh"],"cols":10001,"rows":24}`,
		`{"argv":["sh"],"cols":-1,"rows":24}`, `{"argv":["sh"],"cols":65536,"rows":24}`, `{"argv":[],"cols":80,"rows":24}`, `{"argv":[""],"cols":80,"rows":24}`, `null`, `[`} {
		if _, err := ParsePTY([]byte(p)); !errors.Is(err, ErrProtocol) {
			t.Errorf("ParsePTY(%s) = %v, want ErrProtocol", p, err)
		}
	}
	for _, p := range [][]byte{ResizePayload(0, 1), ResizePayload(1, 0), ResizePayload(MaxTermSide+1, 1), {0, 1, 0}} {
		if _, _, err := ParseResize(p); !errors.Is(err, ErrProtocol) {
			t.Errorf("ParseResize(%v) = %v, want ErrProtocol", p, err)
		}
	}
}

// FuzzTerminalMessages decodes arbitrary payloads as a terminal's messages: what passes
// has a command and a size within bounds, and a resize encodes back to its bytes.
func FuzzTerminalMessages(f *testing.F) {
	open, _ := json.Marshal(PTYMsg{Argv: []string{"sh"}, Cols: 80, Rows: 24})
	f.Add(open)
	f.Add([]byte(`{"argv":["sh"],"cols":0,"rows":1e9}`))
	f.Add(ResizePayload(80, 24))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, p []byte) {
		if m, err := ParsePTY(p); err == nil {
			if len(m.Argv) == 0 || m.Argv[0] == "" || !termSide(m.Cols) || !termSide(m.Rows) {
				t.Fatalf("open-pty %+v passed", m)
			}
		} else if !errors.Is(err, ErrProtocol) {
			t.Fatalf("open-pty: %v", err)
		}
		if c, r, err := ParseResize(p); err == nil {
			if !termSide(c) || !termSide(r) || !bytes.Equal(ResizePayload(c, r), p) {
				t.Fatalf("resize %x passed as %dx%d", p, c, r)
			}
		} else if !errors.Is(err, ErrProtocol) {
			t.Fatalf("resize: %v", err)
		}
	})
}
