package agentproto

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

func TestFileMessagesRoundTrip(t *testing.T) {
	p, _ := json.Marshal(FileMsg{Op: OpWrite, Root: "/workspace", Path: "a/b", MaxBytes: 9})
	if m, err := ParseFile(p); err != nil || m.Op != OpWrite || m.Root != "/workspace" || m.Path != "a/b" || m.MaxBytes != 9 {
		t.Errorf("ParseFile: %+v, %v", m, err)
	}
	list := make([]FileStat, 1000)
	for i := range list {
		list[i] = FileStat{Name: strings.Repeat("n", 200) + string(rune('a'+i%26)), Size: int64(i), Mode: 0o644, MTimeNS: 1}
	}
	payloads := AppendFileList(nil, list)
	var back []FileStat
	for _, p := range payloads {
		if len(p) > MaxPayload {
			t.Fatalf("a list payload of %d bytes", len(p))
		}
		l, err := ParseFileList(p)
		if err != nil {
			t.Fatal(err)
		}
		back = append(back, l...)
	}
	if len(payloads) < 2 || len(back) != len(list) || back[999] != list[999] {
		t.Errorf("%d entries back from %d payloads", len(back), len(payloads))
	}
	if code, msg, err := ParseFileError(FileErrorPayload(FileFull, "no\x00space")); err != nil || code != FileFull || msg != "no?space" {
		t.Errorf("ParseFileError: %d %q %v", code, msg, err)
	}
}

func TestHostileFileMessagesAreRefused(t *testing.T) {
	for _, p := range []string{`{"op":"delete","root":"/w","path":"a"}`, `{"op":"read","root":"w","path":"a"}`,
		`{"op":"read","root":"/w/../x","path":"a"}`, `{"op":"read","root":"/w","path":"../a"}`, `{"op":"read","root":"/w","path":"/a"}`,
		`{"op":"read","root":"/w","path":""}`, `{"op":"write","root":"/w","path":"a","max_bytes":-1}`, `[`} {
		if _, err := ParseFile([]byte(p)); !errors.Is(err, ErrProtocol) {
			t.Errorf("ParseFile(%s) = %v, want ErrProtocol", p, err)
		}
	}
	for _, p := range []string{`{"name":"a","size":1}`, `{"size":-1}`, `x`} {
		if _, err := ParseFileInfo([]byte(p)); !errors.Is(err, ErrProtocol) {
			t.Errorf("ParseFileInfo(%s) = %v, want ErrProtocol", p, err)
		}
	}
	for _, p := range []string{`[]`, `[{"name":"","size":1}]`, `[{"name":"a/b"}]`, `[{"name":".."}]`, `[{"name":"a\u0000"}]`,
		`[{"name":"a","size":-2}]`, `[{"name":"` + strings.Repeat("n", 766) + `"}]`, `{}`} {
		if _, err := ParseFileList([]byte(p)); !errors.Is(err, ErrProtocol) {
			t.Errorf("ParseFileList(%.40s) = %v, want ErrProtocol", p, err)
		}
	}
	for _, p := range [][]byte{{0}, {FileBusy + 1}, append([]byte{FileIO}, bytes.Repeat([]byte("x"), MaxMessage+1)...)} {
		if _, _, err := ParseFileError(p); !errors.Is(err, ErrProtocol) {
			t.Errorf("ParseFileError(%.10v) = %v, want ErrProtocol", p, err)
		}
	}
	for name, raw := range map[string][]byte{
		"file-done with a payload": {byte(FileDone), 0, 0, 0, 1, 0, 0, 0, 1, 0},
		"file-consumed of 3 bytes": {byte(FileConsumed), 0, 0, 0, 1, 0, 0, 0, 3},
		"empty file":               {byte(File), 0, 0, 0, 1, 0, 0, 0, 0},
		"file on stream 0":         {byte(File), 0, 0, 0, 0, 0, 0, 0, 1, '{'},
		"next type unknown":        {byte(FileError + 1), 0, 0, 0, 1, 0, 0, 0, 0},
	} {
		if _, err := NewReader(bytes.NewReader(raw)).ReadFrame(); !errors.Is(err, ErrProtocol) {
			t.Errorf("%s: %v, want ErrProtocol", name, err)
		}
	}
}

// FuzzFileMessages decodes arbitrary payloads as the agent's answers to file operations:
// what passes is bounded and named as an entry of one folder.
func FuzzFileMessages(f *testing.F) {
	f.Add([]byte(`[{"name":"a","size":1,"mode":420,"mtime":5}]`))
	f.Add([]byte(`{"size":3,"mode":2147484141,"mtime":-1}`))
	f.Add(FileErrorPayload(FileInvalid, "escapes"))
	f.Fuzz(func(t *testing.T, p []byte) {
		if list, err := ParseFileList(p); err == nil {
			for _, st := range list {
				if st.Name == "" || strings.ContainsAny(st.Name, "/\x00") || st.Name == ".." || st.Size < 0 || len(st.Name) > maxName {
					t.Fatalf("entry %+v passed", st)
				}
			}
		}
		if st, err := ParseFileInfo(p); err == nil && (st.Size < 0 || st.Name != "") {
			t.Fatalf("info %+v passed", st)
		}
		if code, msg, err := ParseFileError(p); err == nil && (code < FileNotFound || code > FileBusy || len(msg) > 3*MaxMessage) {
			t.Fatalf("error %d %q passed", code, msg)
		}
		_, _ = ParseFile(p)
	})
}
