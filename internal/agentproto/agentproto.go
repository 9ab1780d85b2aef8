// Package agentproto is the wire format between sandboxd and its in-sandbox agent
// (cmd/sandboxd-agent): length-prefixed frames, each naming a stream, multiplexed over
// one byte channel (the container's attached stdin and stdout).
//
// A frame is a 9-byte header, type (1 byte), stream id (4 bytes, big endian) and payload
// length (4 bytes, big endian), then the payload, at most MaxPayload bytes. Stream 0 is
// the channel's own (Hello, Ready, Ping, Pong); every command runs on a stream id the
// host picks.
//
// Whatever comes from the sandbox is hostile: the agent runs as the sandbox's user, and
// anything in the sandbox can replace it, or write into its channel. ReadFrame refuses
// unknown types and oversized frames before reading their payload, and the decoders of
// the agent's messages (ParseExit, ParseFailed, ParseAck, ParseReady) check every field,
// so a reader never allocates more than MaxPayload for one frame and never trusts a
// length it did not check.
package agentproto

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"time"
	"unicode/utf8"
)

// Version is the protocol's version, exchanged in Hello and Ready.
const Version = 1

// MaxPayload bounds one frame's payload.
const MaxPayload = 64 << 10

// HeaderSize is the size of a frame's header.
const HeaderSize = 9

// Type is a frame's type.
type Type byte

// Host to agent.
const (
	Hello    Type = 1 + iota // stream 0: a host attached; payload: version (1 byte), nonce (8 bytes)
	Ping                     // stream 0: payload: nonce (8 bytes)
	Start                    // a command to run: payload: StartMsg as JSON
	Stdin                    // input for the command (1 to MaxPayload bytes)
	StdinEOF                 // no more input
	Cancel                   // kill the command and all it started
)

// Agent to host.
const (
	Ready   Type = 64 + iota // stream 0: answer to Hello: version (1 byte), nonce (8 bytes)
	Pong                     // stream 0: answer to Ping: nonce (8 bytes)
	Started                  // the command runs (said only of a command that takes input): no payload
	Failed                   // the command did not start: reason (1 byte), message (text)
	Stdout                   // output (1 to MaxPayload bytes)
	Stderr                   // output (1 to MaxPayload bytes)
	Ack                      // input consumed: bytes (4 bytes)
	Exit                     // the command ended: ExitMsg (ExitSize bytes); the stream ends
)

func (t Type) known() bool {
	return t >= Hello && t <= Cancel || t >= Ready && t <= Exit || t >= OpenPTY && t <= Resize ||
		t >= File && t <= FileConsumed || t >= FileInfo && t <= FileError
}

func (t Type) String() string {
	names := map[Type]string{Hello: "hello", Ping: "ping", Start: "start", Stdin: "stdin", StdinEOF: "stdin-eof",
		Cancel: "cancel", Ready: "ready", Pong: "pong", Started: "started", Failed: "failed", Stdout: "stdout",
		Stderr: "stderr", Ack: "ack", Exit: "exit", OpenPTY: "open-pty", Resize: "resize",
		File: "file", FileConsumed: "file-consumed", FileInfo: "file-info", FileList: "file-list", FileDone: "file-done", FileError: "file-error"}
	if n, ok := names[t]; ok {
		return n
	}
	return fmt.Sprintf("type(%d)", byte(t))
}

// ErrProtocol is wrapped by every error about a frame or message that breaks the
// protocol: after one, the channel cannot be trusted to be in step any more.
var ErrProtocol = errors.New("agent protocol violation")

// Frame is one frame. Payload is only valid until the next ReadFrame on the same Reader.
type Frame struct {
	Type    Type
	Stream  uint32
	Payload []byte
}

// AppendFrame appends the encoding of a frame to b. It panics on a payload over
// MaxPayload: the writer splits its data.
func AppendFrame(b []byte, t Type, stream uint32, payload []byte) []byte {
	if len(payload) > MaxPayload {
		panic("agentproto: payload over MaxPayload")
	}
	b = append(b, byte(t))
	b = binary.BigEndian.AppendUint32(b, stream)
	b = binary.BigEndian.AppendUint32(b, uint32(len(payload)))
	return append(b, payload...)
}

// Reader reads frames.
type Reader struct {
	r   *bufio.Reader
	buf []byte
}

// NewReader returns a Reader of r.
func NewReader(r io.Reader) *Reader {
	return &Reader{r: bufio.NewReaderSize(r, 64<<10)}
}

// ReadFrame reads the next frame. It returns io.EOF at a clean end between frames,
// io.ErrUnexpectedEOF inside one, and an error wrapping ErrProtocol for an unknown type,
// a payload over MaxPayload or a frame whose type requires a payload size it does not
// have; the payload is read only after the header passed.
func (r *Reader) ReadFrame() (Frame, error) {
	var h [HeaderSize]byte
	if _, err := io.ReadFull(r.r, h[:]); err != nil {
		return Frame{}, err
	}
	f := Frame{Type: Type(h[0]), Stream: binary.BigEndian.Uint32(h[1:5])}
	n := binary.BigEndian.Uint32(h[5:9])
	if !f.Type.known() {
		return Frame{}, fmt.Errorf("%w: unknown frame type %d", ErrProtocol, h[0])
	}
	if n > MaxPayload {
		return Frame{}, fmt.Errorf("%w: %s frame of %d bytes, over %d", ErrProtocol, f.Type, n, MaxPayload)
	}
	if err := checkShape(f.Type, f.Stream, int(n)); err != nil {
		return Frame{}, err
	}
	if cap(r.buf) < int(n) {
		r.buf = make([]byte, n)
	}
	f.Payload = r.buf[:n]
	if _, err := io.ReadFull(r.r, f.Payload); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return Frame{}, err
	}
	return f, nil
}

// checkShape checks what the header alone can say: which stream a type belongs on and
// the payload size it must have.
func checkShape(t Type, stream uint32, n int) error {
	control := t == Hello || t == Ping || t == Ready || t == Pong
	switch {
	case control && stream != 0:
		return fmt.Errorf("%w: %s frame on stream %d, want 0", ErrProtocol, t, stream)
	case !control && stream == 0:
		return fmt.Errorf("%w: %s frame on stream 0", ErrProtocol, t)
	}
	want := -1 // any
	switch t {
	case Hello, Ready:
		want = 9
	case Ping, Pong:
		want = 8
	case StdinEOF, Cancel, Started, FileDone:
		want = 0
	case Ack, FileConsumed:
		want = 4
	case Resize:
		want = ResizeSize
	case Exit:
		want = ExitSize
	case Stdin, Stdout, Stderr, Failed, Start, OpenPTY, File, FileInfo, FileList, FileError:
		if n == 0 {
			return fmt.Errorf("%w: empty %s frame", ErrProtocol, t)
		}
	}
	if want >= 0 && n != want {
		return fmt.Errorf("%w: %s frame of %d bytes, want %d", ErrProtocol, t, n, want)
	}
	return nil
}

// HelloPayload is the payload of Hello and Ready.
func HelloPayload(nonce uint64) []byte {
	return binary.BigEndian.AppendUint64([]byte{Version}, nonce)
}

// ParseHello reads a Hello's or Ready's payload. Errors wrap ErrProtocol (another version).
func ParseHello(p []byte) (nonce uint64, err error) {
	if len(p) != 9 {
		return 0, fmt.Errorf("%w: hello of %d bytes", ErrProtocol, len(p))
	}
	if p[0] != Version {
		return 0, fmt.Errorf("%w: hello of version %d, want %d", ErrProtocol, p[0], Version)
	}
	return binary.BigEndian.Uint64(p[1:]), nil
}

// StartMsg is a command to run.
type StartMsg struct {
	Argv      []string `json:"argv"`
	Env       []string `json:"env,omitempty"` // NAME=value, over the agent's own
	Dir       string   `json:"dir,omitempty"` // empty: the agent's working folder
	TimeoutMS int64    `json:"timeout_ms"`    // 1 to MaxTimeoutMS: killed after it, at the source
	OutputCap int64    `json:"output_cap"`    // > 0: output past OutputCap+1 bytes is dropped
	Stdin     bool     `json:"stdin"`         // Stdin frames follow, then StdinEOF
}

// MaxTimeoutMS bounds a Start's TimeoutMS: the largest count of milliseconds a
// time.Duration holds (about 292 years). The host derives TimeoutMS from a Duration (its
// context's deadline), so it never sends more; a larger one would overflow Timeout into a
// negative or shortened timeout, and is refused as malformed like a negative one, not
// clamped: a message no host writes is not guessed at.
const MaxTimeoutMS = math.MaxInt64 / int64(time.Millisecond)

// Timeout is m's TimeoutMS as a Duration; 0: no timeout. It does not overflow for a
// message that ParseStart accepted.
func (m StartMsg) Timeout() time.Duration {
	return time.Duration(m.TimeoutMS) * time.Millisecond
}

// ParseStart decodes and checks a Start payload: a non-empty argv, TimeoutMS and
// OutputCap not negative, TimeoutMS at most MaxTimeoutMS. Errors wrap ErrProtocol.
func ParseStart(p []byte) (StartMsg, error) {
	var m StartMsg
	if err := json.Unmarshal(p, &m); err != nil {
		return StartMsg{}, fmt.Errorf("%w: start: %v", ErrProtocol, err)
	}
	if len(m.Argv) == 0 || m.Argv[0] == "" {
		return StartMsg{}, fmt.Errorf("%w: start: empty argv", ErrProtocol)
	}
	if m.TimeoutMS < 0 || m.OutputCap < 0 {
		return StartMsg{}, fmt.Errorf("%w: start: negative timeout or cap", ErrProtocol)
	}
	if m.TimeoutMS > MaxTimeoutMS {
		return StartMsg{}, fmt.Errorf("%w: start: timeout of %d ms, over %d", ErrProtocol, m.TimeoutMS, MaxTimeoutMS)
	}
	return m, nil
}

// Reasons a command did not start (Failed).
const (
	ReasonNotFound byte = 1 + iota // no such program
	ReasonWorkdir                  // no such working folder
	ReasonStart                    // any other failure to start (no pids left, say)
	ReasonBusy                     // the agent runs too many commands
)

// MaxMessage bounds the text of a Failed frame.
const MaxMessage = 1 << 10

// FailedPayload is the payload of Failed.
func FailedPayload(reason byte, msg string) []byte {
	if len(msg) > MaxMessage {
		msg = msg[:MaxMessage]
	}
	return append([]byte{reason}, msg...)
}

// ParseFailed reads a Failed payload. The message is returned as valid UTF-8 text of
// printable characters (anything else becomes '?'), at most MaxMessage bytes.
func ParseFailed(p []byte) (reason byte, msg string, err error) {
	if len(p) == 0 || p[0] < ReasonNotFound || p[0] > ReasonBusy {
		return 0, "", fmt.Errorf("%w: failed: bad reason", ErrProtocol)
	}
	if len(p)-1 > MaxMessage {
		return 0, "", fmt.Errorf("%w: failed: message of %d bytes, over %d", ErrProtocol, len(p)-1, MaxMessage)
	}
	b := make([]rune, 0, len(p)-1)
	for _, r := range string(p[1:]) {
		if r == utf8.RuneError || r < ' ' || r == 0x7f {
			r = '?'
		}
		b = append(b, r)
	}
	return p[0], string(b), nil
}

// AckPayload is the payload of Ack.
func AckPayload(n uint32) []byte { return binary.BigEndian.AppendUint32(nil, n) }

// ParseAck reads an Ack payload: at most MaxPayload bytes are acknowledged at once.
func ParseAck(p []byte) (uint32, error) {
	n := binary.BigEndian.Uint32(p)
	if n == 0 || n > MaxPayload {
		return 0, fmt.Errorf("%w: ack of %d bytes", ErrProtocol, n)
	}
	return n, nil
}

// ExitSize is the size of an Exit payload.
const ExitSize = 6

// ExitMsg is how a command ended.
type ExitMsg struct {
	Code      int32 // its exit status, 128+signal when a signal ended it
	Signal    uint8 // the signal that ended it, 0 if none
	TimedOut  bool  // the agent killed it at its timeout
	Canceled  bool  // the agent killed it for a Cancel (or a lost host)
	Truncated bool  // output past the cap was dropped
}

const (
	flagTimedOut = 1 << iota
	flagCanceled
	flagTruncated
)

// Payload encodes m.
func (m ExitMsg) Payload() []byte {
	var flags byte
	if m.TimedOut {
		flags |= flagTimedOut
	}
	if m.Canceled {
		flags |= flagCanceled
	}
	if m.Truncated {
		flags |= flagTruncated
	}
	b := binary.BigEndian.AppendUint32(nil, uint32(m.Code))
	return append(b, m.Signal, flags)
}

// ParseExit reads an Exit payload: an exit code between 0 and 255, a signal below 65,
// known flags only.
func ParseExit(p []byte) (ExitMsg, error) {
	if len(p) != ExitSize {
		return ExitMsg{}, fmt.Errorf("%w: exit of %d bytes", ErrProtocol, len(p))
	}
	code, sig, flags := int32(binary.BigEndian.Uint32(p)), p[4], p[5]
	if code < 0 || code > 255 || sig > 64 || flags&^(flagTimedOut|flagCanceled|flagTruncated) != 0 {
		return ExitMsg{}, fmt.Errorf("%w: exit code %d, signal %d, flags %#x", ErrProtocol, code, sig, flags)
	}
	return ExitMsg{Code: code, Signal: sig, TimedOut: flags&flagTimedOut != 0,
		Canceled: flags&flagCanceled != 0, Truncated: flags&flagTruncated != 0}, nil
}

// StdinWindow bounds the input a host may have sent on a stream and the agent not yet
// acknowledged (Ack): the agent holds at most that much of a command's input, and
// treats more as a protocol violation.
const StdinWindow = 4 * MaxPayload

// ChannelArg, as the agent's only argument, makes it a channel of its own for one host
// rather than the sandbox's main process: started through the engine's exec by a host
// that shares the sandbox with others (sandboxd's replicas), it serves its standard input
// and output and exits when they end.
const ChannelArg = "--channel"

// CommandVar, in the environment of the agent started as a sandbox's main process,
// holds the image's own entrypoint and command as a JSON array of strings, which the
// agent runs as a child of its own (agent.StartChild). The agent takes it out of its
// environment before anything starts: neither that child nor any command sees it.
const CommandVar = "SANDBOXD_AGENT_COMMAND"

// TokenVar is the environment variable that carries a command's kill token, which what
// it starts inherits, whatever session it moves to (as execwrap.TokenVar on the engine's
// path). A request may not set it.
const TokenVar = "SANDBOXD_EXEC"
