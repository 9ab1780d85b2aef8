package agentproto

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"
)

func TestFramesRoundTrip(t *testing.T) {
	var b []byte
	b = AppendFrame(b, Hello, 0, HelloPayload(42))
	b = AppendFrame(b, Stdout, 7, []byte("hello"))
	b = AppendFrame(b, Exit, 7, ExitMsg{Code: 137, Signal: 9, Canceled: true, Truncated: true}.Payload())
	b = AppendFrame(b, Stdin, 3, bytes.Repeat([]byte{'x'}, MaxPayload))
	r := NewReader(bytes.NewReader(b))

	f, err := r.ReadFrame()
	if err != nil || f.Type != Hello || f.Stream != 0 {
		t.Fatalf("hello: %+v, %v", f, err)
	}
	if n, err := ParseHello(f.Payload); err != nil || n != 42 {
		t.Errorf("hello nonce %d, %v", n, err)
	}
	if f, err = r.ReadFrame(); err != nil || f.Type != Stdout || f.Stream != 7 || string(f.Payload) != "hello" {
		t.Errorf("stdout: %+v, %v", f, err)
	}
	f, err = r.ReadFrame()
	if err != nil {
		t.Fatal(err)
	}
	if m, err := ParseExit(f.Payload); err != nil || m != (ExitMsg{Code: 137, Signal: 9, Canceled: true, Truncated: true}) {
		t.Errorf("exit: %+v, %v", m, err)
	}
	if f, err = r.ReadFrame(); err != nil || len(f.Payload) != MaxPayload {
		t.Errorf("largest frame: %d bytes, %v", len(f.Payload), err)
	}
	if _, err := r.ReadFrame(); err != io.EOF {
		t.Errorf("at the end: %v, want io.EOF", err)
	}
}

func TestHostileFramesAreRefusedBeforeTheirPayload(t *testing.T) {
	for name, raw := range map[string][]byte{
		"unknown type":          {200, 0, 0, 0, 1, 0, 0, 0, 0},
		"oversized":             {byte(Stdout), 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff},
		"just over the maximum": {byte(Stdout), 0, 0, 0, 1, 0, 1, 0, 1},
		"output on stream 0":    {byte(Stdout), 0, 0, 0, 0, 0, 0, 0, 1, 'x'},
		"pong on a stream":      {byte(Pong), 0, 0, 0, 5, 0, 0, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8},
		"short exit":            {byte(Exit), 0, 0, 0, 1, 0, 0, 0, 2, 0, 0},
		"empty output":          {byte(Stdout), 0, 0, 0, 1, 0, 0, 0, 0},
	} {
		t.Run(name, func(t *testing.T) {
			// No payload follows the header: an error other than ErrProtocol would mean
			// the reader tried to read it.
			_, err := NewReader(bytes.NewReader(raw[:HeaderSize])).ReadFrame()
			if !errors.Is(err, ErrProtocol) {
				t.Errorf("err = %v, want ErrProtocol", err)
			}
		})
	}
	if _, err := NewReader(bytes.NewReader([]byte{byte(Stdout), 0, 0, 0, 1, 0, 0, 0, 5, 'a'})).ReadFrame(); err != io.ErrUnexpectedEOF {
		t.Errorf("cut frame: %v, want io.ErrUnexpectedEOF", err)
	}
}

func TestHostileMessagesAreRefused(t *testing.T) {
	bad := [][]byte{
		{0, 0, 1, 0, 0, 0},             // exit code 256
		{0xff, 0xff, 0xff, 0xff, 0, 0}, // exit code -1
		{0, 0, 0, 1, 65, 0},            // signal 65
		{0, 0, 0, 1, 0, 8},             // unknown flag
	}
	for _, p := range bad {
		if _, err := ParseExit(p); !errors.Is(err, ErrProtocol) {
			t.Errorf("ParseExit(%v) = %v, want ErrProtocol", p, err)
		}
	}
	if _, _, err := ParseFailed([]byte{9, 'x'}); !errors.Is(err, ErrProtocol) {
		t.Errorf("unknown reason: %v", err)
	}
	if _, _, err := ParseFailed(append([]byte{ReasonStart}, strings.Repeat("x", MaxMessage+1)...)); !errors.Is(err, ErrProtocol) {
		t.Errorf("long message: %v", err)
	}
	if _, msg, _ := ParseFailed([]byte{ReasonStart, 'a', '\n', 0xff, 0x1b, 'b'}); msg != "a???b" {
		t.Errorf("message %q, want control characters and bad UTF-8 replaced", msg)
	}
	for _, n := range []uint32{0, MaxPayload + 1} {
		if _, err := ParseAck(AckPayload(n)); !errors.Is(err, ErrProtocol) {
			t.Errorf("ack of %d: %v", n, err)
		}
	}
	if _, err := ParseHello(append([]byte{Version + 1}, make([]byte, 8)...)); !errors.Is(err, ErrProtocol) {
		t.Errorf("another version: %v", err)
	}
	for _, p := range []string{`{"argv":[]}`, `{"argv":[""]}`, `{"argv":["x"],"timeout_ms":-1}`, `[`,
		fmt.Sprintf(`{"argv":["x"],"timeout_ms":%d}`, MaxTimeoutMS+1), `{"argv":["x"],"timeout_ms":9223372036854775807}`} {
		if _, err := ParseStart([]byte(p)); !errors.Is(err, ErrProtocol) {
			t.Errorf("ParseStart(%s) = %v", p, err)
		}
	}
}

// The longest timeout a host may ask for is one a Duration holds: it reaches the agent
// whole, not overflowed into a negative or shorter one.
func TestStartTimeoutUpToTheMaximum(t *testing.T) {
	for _, ms := range []int64{0, 1, 24 * 3600 * 1000, MaxTimeoutMS} {
		m, err := ParseStart(fmt.Appendf(nil, `{"argv":["x"],"timeout_ms":%d}`, ms))
		if err != nil {
			t.Fatalf("timeout of %d ms: %v", ms, err)
		}
		if got := m.Timeout(); got < 0 || got.Milliseconds() != ms {
			t.Errorf("timeout of %d ms is %v", ms, got)
		}
	}
	// The host's own encoding of the farthest deadline (docker's exec) is accepted.
	if ms := time.Duration(1<<63 - 1).Milliseconds(); ms != MaxTimeoutMS {
		t.Errorf("the longest Duration is %d ms, MaxTimeoutMS %d", ms, MaxTimeoutMS)
	}
}

// FuzzReadFrame feeds the reader arbitrary bytes, as a hostile agent would: it never
// panics, never returns a payload over MaxPayload, returns only frames whose header it
// checked, and every frame it returns encodes back to the bytes it read.
func FuzzReadFrame(f *testing.F) {
	f.Add(AppendFrame(nil, Stdout, 1, []byte("hi")))
	f.Add(AppendFrame(AppendFrame(nil, Ready, 0, HelloPayload(1)), Exit, 3, ExitMsg{Code: 1}.Payload()))
	f.Add(AppendFrame(nil, Failed, 2, FailedPayload(ReasonNotFound, "nope")))
	f.Add(AppendFrame(nil, Ack, 2, AckPayload(10)))
	f.Add([]byte{byte(Stdout), 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff})
	f.Add(AppendFrame(nil, Start, 5, fmt.Appendf(nil, `{"argv":["x"],"timeout_ms":%d}`, MaxTimeoutMS+1)))
	f.Add(AppendFrame(AppendFrame(nil, OpenPTY, 4, []byte(`{"argv":["sh"],"cols":80,"rows":24}`)), Resize, 4, ResizePayload(100, 30)))
	f.Fuzz(func(t *testing.T, data []byte) {
		r := NewReader(bytes.NewReader(data))
		var again []byte
		for {
			fr, err := r.ReadFrame()
			if err != nil {
				if err != io.EOF && err != io.ErrUnexpectedEOF && !errors.Is(err, ErrProtocol) {
					t.Fatalf("unexpected error %v", err)
				}
				break
			}
			if len(fr.Payload) > MaxPayload || !fr.Type.known() {
				t.Fatalf("frame %+v passed", fr)
			}
			again = AppendFrame(again, fr.Type, fr.Stream, fr.Payload)
			switch fr.Type {
			case Exit:
				if m, err := ParseExit(fr.Payload); err == nil {
					if !bytes.Equal(m.Payload(), fr.Payload) {
						t.Fatalf("exit %v re-encodes as %v", fr.Payload, m.Payload())
					}
				}
			case Failed:
				if _, msg, err := ParseFailed(fr.Payload); err == nil && len(msg) > 3*MaxMessage {
					t.Fatalf("message of %d bytes", len(msg))
				}
			case Ack:
				if n, err := ParseAck(fr.Payload); err == nil && (n == 0 || n > MaxPayload) {
					t.Fatalf("ack %d passed", n)
				}
			case Start:
				if m, err := ParseStart(fr.Payload); err == nil && (m.Timeout() < 0 || m.Timeout().Milliseconds() != m.TimeoutMS) {
					t.Fatalf("timeout of %d ms passed as %v", m.TimeoutMS, m.Timeout())
				}
			case Ready, Hello:
				_, _ = ParseHello(fr.Payload)
			case OpenPTY:
				_, _ = ParsePTY(fr.Payload)
			case Resize:
				if c, r, err := ParseResize(fr.Payload); err == nil && !bytes.Equal(ResizePayload(c, r), fr.Payload) {
					t.Fatalf("resize %v re-encodes as %v", fr.Payload, ResizePayload(c, r))
				}
			}
		}
		if !bytes.HasPrefix(data, again) {
			t.Fatalf("frames re-encode to %x, not a prefix of the input %x", again, data)
		}
	})
}
