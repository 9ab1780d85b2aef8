package agentproto

import (
	"encoding/json"
	"fmt"
	"io/fs"
	"path"
	"strings"
	"unicode/utf8"
)

// A file operation (the file API through the agent) is a stream opened by File, whose
// payload (FileMsg) names the operation, the folder it is confined to and the path in it:
//
//   - write: the host's Stdin frames are the file's bytes (acknowledged by Ack within
//     StdinWindow, as a command's input), StdinEOF ends them, Cancel drops the write; the
//     agent answers FileInfo once the file is in place, or FileError;
//   - read: the agent answers FileInfo, then the file's bytes as Stdout frames, at most
//     FileWindow of them not yet acknowledged by the host's FileConsumed, then FileDone;
//     or FileError at any point. Cancel stops it;
//   - list: the agent answers FileList frames (the entries, at most MaxListEntries in
//     all), then FileDone; or FileError.
//
// FileDone and FileError end the stream, and so does the FileInfo of a write.

// Host to agent, numbered apart from the other lists so that each may grow.
const (
	File         Type = 40 + iota // a file operation: payload FileMsg as JSON
	FileConsumed                  // read bytes the host took: 4 bytes, as Ack's
)

// Agent to host.
const (
	FileInfo  Type = 100 + iota // a file as it is: FileStat as JSON (name empty)
	FileList                    // entries of a folder: a JSON array of FileStat (each named)
	FileDone                    // a read's bytes or a listing are complete: no payload
	FileError                   // the operation failed: code (1 byte), message (text)
)

// File operations.
const (
	OpWrite = "write"
	OpRead  = "read"
	OpList  = "list"
)

// FileWindow bounds the bytes of a read the agent has sent and the host not yet
// acknowledged: a slow reader holds the read, never the channel.
const FileWindow = 4 * MaxPayload

// MaxListEntries bounds a listing, as the host's own file API does
// (rootfiles.MaxListEntries).
const MaxListEntries = 10000

// maxName bounds an entry's name: Linux's NAME_MAX of 255 bytes, each of which JSON may
// turn into a 3-byte U+FFFD when the name is not valid UTF-8.
const maxName = 3 * 255

// FileMsg is a file operation.
type FileMsg struct {
	Op       string `json:"op"`
	Root     string `json:"root"`                // the folder it is confined to: absolute, clean
	Path     string `json:"path"`                // in Root: relative, clean, no ".." ("." for Root)
	MaxBytes int64  `json:"max_bytes,omitempty"` // write: the file's size at most
}

// ParseFile decodes and checks a File payload. Errors wrap ErrProtocol.
func ParseFile(p []byte) (FileMsg, error) {
	var m FileMsg
	if err := json.Unmarshal(p, &m); err != nil {
		return FileMsg{}, fmt.Errorf("%w: file: %v", ErrProtocol, err)
	}
	switch {
	case m.Op != OpWrite && m.Op != OpRead && m.Op != OpList:
		return FileMsg{}, fmt.Errorf("%w: file: operation %q", ErrProtocol, m.Op)
	case !path.IsAbs(m.Root) || path.Clean(m.Root) != m.Root:
		return FileMsg{}, fmt.Errorf("%w: file: root %q", ErrProtocol, m.Root)
	case !fs.ValidPath(m.Path):
		return FileMsg{}, fmt.Errorf("%w: file: path %q", ErrProtocol, m.Path)
	case m.MaxBytes < 0:
		return FileMsg{}, fmt.Errorf("%w: file: negative size", ErrProtocol)
	}
	return m, nil
}

// FileStat describes a file or folder.
type FileStat struct {
	Name    string `json:"name,omitempty"` // an entry's name in its folder (FileList)
	Size    int64  `json:"size"`
	Mode    uint32 `json:"mode"`  // io/fs.FileMode
	MTimeNS int64  `json:"mtime"` // unix nanoseconds
}

// ParseFileInfo reads a FileInfo payload: no name, a size of 0 or more. Errors wrap
// ErrProtocol.
func ParseFileInfo(p []byte) (FileStat, error) {
	var st FileStat
	if err := json.Unmarshal(p, &st); err != nil {
		return FileStat{}, fmt.Errorf("%w: file info: %v", ErrProtocol, err)
	}
	if st.Name != "" || st.Size < 0 {
		return FileStat{}, fmt.Errorf("%w: file info: name %q, size %d", ErrProtocol, st.Name, st.Size)
	}
	return st, nil
}

// ParseFileList reads a FileList payload: at least one entry, each with a name that
// names one entry of a folder (no slash, not "." or "..", no NUL, valid UTF-8, at most
// 255 bytes) and a size of 0 or more. Errors wrap ErrProtocol.
func ParseFileList(p []byte) ([]FileStat, error) {
	var list []FileStat
	if err := json.Unmarshal(p, &list); err != nil {
		return nil, fmt.Errorf("%w: file list: %v", ErrProtocol, err)
	}
	if len(list) == 0 {
		return nil, fmt.Errorf("%w: empty file list", ErrProtocol)
	}
	for _, st := range list {
		n := st.Name
		if n == "" || n == "." || n == ".." || len(n) > maxName || strings.ContainsAny(n, "/\x00") || !utf8.ValidString(n) || st.Size < 0 {
			return nil, fmt.Errorf("%w: file list: entry %q of size %d", ErrProtocol, n, st.Size)
		}
	}
	return list, nil
}

// AppendFileList appends to b the FileList payloads of list: each a JSON array of at most
// MaxPayload bytes.
func AppendFileList(b [][]byte, list []FileStat) [][]byte {
	var cur []byte
	for _, st := range list {
		e, _ := json.Marshal(st)
		if len(cur) > 0 && len(cur)+1+len(e)+1 > MaxPayload {
			b = append(b, append(cur, ']'))
			cur = nil
		}
		if len(cur) == 0 {
			cur = append([]byte{'['}, e...)
		} else {
			cur = append(append(cur, ','), e...)
		}
	}
	if len(cur) > 0 {
		b = append(b, append(cur, ']'))
	}
	return b
}

// Why a file operation failed (FileError).
const (
	FileNotFound byte = 1 + iota // no such file or folder
	FileInvalid                  // not allowed: out of the root, a folder for a file, a pipe, too many entries
	FileTooLarge                 // a write past its MaxBytes
	FileFull                     // no space left
	FileIO                       // any other failure
	FileBusy                     // the agent runs too many streams
)

// FileErrorPayload is the payload of FileError.
func FileErrorPayload(code byte, msg string) []byte {
	if len(msg) > MaxMessage {
		msg = msg[:MaxMessage]
	}
	return append([]byte{code}, msg...)
}

// ParseFileError reads a FileError payload. The message is returned as ParseFailed
// returns its own: printable text, at most MaxMessage bytes. Errors wrap ErrProtocol.
func ParseFileError(p []byte) (code byte, msg string, err error) {
	if len(p) == 0 || p[0] < FileNotFound || p[0] > FileBusy {
		return 0, "", fmt.Errorf("%w: file error: bad code", ErrProtocol)
	}
	if len(p)-1 > MaxMessage {
		return 0, "", fmt.Errorf("%w: file error: message of %d bytes, over %d", ErrProtocol, len(p)-1, MaxMessage)
	}
	return p[0], printable(p[1:]), nil
}

// printable is p as valid UTF-8 text of printable characters: anything else becomes '?'.
func printable(p []byte) string {
	b := make([]rune, 0, len(p))
	for _, r := range string(p) {
		if r == utf8.RuneError || r < ' ' || r == 0x7f {
			r = '?'
		}
		b = append(b, r)
	}
	return string(b)
}
