package agentproto

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
)

// A command on a pseudo-terminal (sandboxd's interactive terminal) is a stream like any
// command's, opened by OpenPTY instead of Start: the host's Stdin frames are what is
// typed (acknowledged, within StdinWindow, as a command's input), Resize frames change
// the terminal's size, Cancel kills it with all it started; the agent answers Started or
// Failed, then Stdout frames (a terminal has one output), Acks, and one Exit. StdinEOF
// only stops the input: a terminal ends when its command does.

// Host to agent, numbered apart from the command's types so that both lists may grow.
const (
	OpenPTY Type = 32 + iota // a command to run on a pseudo-terminal: payload: PTYMsg as JSON
	Resize                   // the terminal's new size: ResizeSize bytes, columns then rows (2 bytes each, big endian)
)

// MaxTermSide bounds a terminal's columns and rows.
const MaxTermSide = 10000

// ResizeSize is the size of a Resize payload.
const ResizeSize = 4

// PTYMsg is a command to run on a pseudo-terminal of the given size.
type PTYMsg struct {
	Argv []string `json:"argv"`
	Env  []string `json:"env,omitempty"` // NAME=value, over the agent's own
	Dir  string   `json:"dir,omitempty"` // empty: the agent's working folder
	Cols uint16   `json:"cols"`          // 1 to MaxTermSide
	Rows uint16   `json:"rows"`          // 1 to MaxTermSide
}

// ParsePTY decodes and checks an OpenPTY payload. Errors wrap ErrProtocol.
func ParsePTY(p []byte) (PTYMsg, error) {
	var m PTYMsg
	if err := json.Unmarshal(p, &m); err != nil {
		return PTYMsg{}, fmt.Errorf("%w: open-pty: %v", ErrProtocol, err)
	}
	if len(m.Argv) == 0 || m.Argv[0] == "" {
		return PTYMsg{}, fmt.Errorf("%w: open-pty: empty argv", ErrProtocol)
	}
	if !termSide(m.Cols) || !termSide(m.Rows) {
		return PTYMsg{}, fmt.Errorf("%w: open-pty: size %dx%d", ErrProtocol, m.Cols, m.Rows)
	}
	return m, nil
}

// ResizePayload is the payload of Resize.
func ResizePayload(cols, rows uint16) []byte {
	return binary.BigEndian.AppendUint16(binary.BigEndian.AppendUint16(nil, cols), rows)
}

// ParseResize reads a Resize payload: both sides 1 to MaxTermSide. Errors wrap ErrProtocol.
func ParseResize(p []byte) (cols, rows uint16, err error) {
	if len(p) != ResizeSize {
		return 0, 0, fmt.Errorf("%w: resize of %d bytes", ErrProtocol, len(p))
	}
	cols, rows = binary.BigEndian.Uint16(p), binary.BigEndian.Uint16(p[2:])
	if !termSide(cols) || !termSide(rows) {
		return 0, 0, fmt.Errorf("%w: resize to %dx%d", ErrProtocol, cols, rows)
	}
	return cols, rows, nil
}

func termSide(n uint16) bool { return n > 0 && n <= MaxTermSide }
