package agent

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/internal/agentproto"
)

// The file operations on their own (the conformance suite runs them in real sandboxes,
// through sandboxd: internal/docker TestFilesConformance).

func (h *host) file(stream uint32, m agentproto.FileMsg) {
	h.t.Helper()
	p, _ := json.Marshal(m)
	h.send(agentproto.File, stream, p)
}

// A write the host cancels half way leaves nothing, not even its folders' contents; a
// new host's hello does the same to the writes of the previous one.
func TestACanceledWriteLeavesNothing(t *testing.T) {
	dir := t.TempDir()
	h := newHost(t, Config{})
	for i, end := range []func(){
		func() { h.send(agentproto.Cancel, 1, nil) },
		func() { h.send(agentproto.Hello, 0, agentproto.HelloPayload(7)) },
	} {
		id := uint32(i + 1)
		h.file(id, agentproto.FileMsg{Op: agentproto.OpWrite, Root: dir, Path: "d/f", MaxBytes: 100})
		h.send(agentproto.Stdin, id, []byte("half"))
		f := h.next()
		for f.Stream != id { // the previous write's end
			f = h.next()
		}
		if f.Type != agentproto.Ack {
			t.Fatalf("after the input: %s on %d (%q), want an ack", f.Type, f.Stream, f.Payload)
		}
		end()
		if i == 1 {
			f := h.next()
			for f.Stream != 0 {
				f = h.next()
			}
			if f.Type != agentproto.Ready {
				t.Fatalf("after the hello: %s, want ready", f.Type)
			}
		}
		deadline := time.Now().Add(10 * time.Second)
		for {
			entries, _ := os.ReadDir(filepath.Join(dir, "d"))
			if len(entries) == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("after the end of write %d: %v in the folder", i, entries)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// A read sends no more than FileWindow bytes ahead of what the host took.
func TestAReadWaitsForTheHost(t *testing.T) {
	dir := t.TempDir()
	data := bytes.Repeat([]byte("0123456789abcdef"), agentproto.FileWindow/4) // four windows
	if err := os.WriteFile(filepath.Join(dir, "big"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	h := newHost(t, Config{})
	h.file(3, agentproto.FileMsg{Op: agentproto.OpRead, Root: dir, Path: "big"})
	f := h.next()
	st, err := agentproto.ParseFileInfo(f.Payload)
	if f.Type != agentproto.FileInfo || err != nil || st.Size != int64(len(data)) {
		t.Fatalf("first frame %s %+v %v, want the file's info", f.Type, st, err)
	}
	var got []byte
	for len(got) < agentproto.FileWindow {
		f := h.next()
		if f.Type != agentproto.Stdout {
			t.Fatalf("frame %s, want data", f.Type)
		}
		got = append(got, f.Payload...)
	}
	select {
	case f := <-h.frames:
		t.Fatalf("%s frame of %d bytes past the window", f.Type, len(f.Payload))
	case <-time.After(300 * time.Millisecond):
	}
	for len(got) < len(data) {
		h.send(agentproto.FileConsumed, 3, agentproto.AckPayload(uint32(min(agentproto.MaxPayload, len(got)))))
		f := h.next()
		if f.Type != agentproto.Stdout {
			t.Fatalf("frame %s, want data", f.Type)
		}
		got = append(got, f.Payload...)
	}
	if !bytes.Equal(got, data) {
		t.Fatal("the bytes read differ from the file's")
	}
	for range 4 {
		h.send(agentproto.FileConsumed, 3, agentproto.AckPayload(agentproto.MaxPayload))
	}
	if f := h.next(); f.Type != agentproto.FileDone {
		t.Fatalf("after the file: %s, want done", f.Type)
	}
}

// A listing of more than fits in a frame comes in several; errors carry their kind.
func TestListingsAndErrors(t *testing.T) {
	dir := t.TempDir()
	for i := range 600 {
		name := strings.Repeat("n", 200) + strings.Repeat("x", i%10) + string(rune('a'+i%26)) + string(rune('a'+i/26))
		if err := os.WriteFile(filepath.Join(dir, name), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	h := newHost(t, Config{})
	h.file(5, agentproto.FileMsg{Op: agentproto.OpList, Root: dir, Path: "."})
	n, frames := 0, 0
	for {
		f := h.next()
		if f.Type == agentproto.FileDone {
			break
		}
		list, err := agentproto.ParseFileList(f.Payload)
		if f.Type != agentproto.FileList || err != nil {
			t.Fatalf("%s: %v", f.Type, err)
		}
		n, frames = n+len(list), frames+1
	}
	if n != 600 || frames < 2 {
		t.Errorf("%d entries in %d frames, want 600 in several", n, frames)
	}
	for i, tc := range []struct {
		m    agentproto.FileMsg
		code byte
	}{
		{agentproto.FileMsg{Op: agentproto.OpRead, Root: dir, Path: "missing"}, agentproto.FileNotFound},
		{agentproto.FileMsg{Op: agentproto.OpRead, Root: dir, Path: "."}, agentproto.FileInvalid},
		{agentproto.FileMsg{Op: agentproto.OpList, Root: filepath.Join(dir, "none"), Path: "."}, agentproto.FileNotFound},
	} {
		h.file(uint32(10+i), tc.m)
		f := h.next()
		code, _, err := agentproto.ParseFileError(f.Payload)
		if f.Type != agentproto.FileError || err != nil || code != tc.code {
			t.Errorf("%+v: %s code %d (%v), want code %d", tc.m, f.Type, code, err, tc.code)
		}
	}
	h.file(7, agentproto.FileMsg{Op: agentproto.OpWrite, Root: dir, Path: "w", MaxBytes: 3})
	h.send(agentproto.Stdin, 7, []byte("four"))
	h.send(agentproto.StdinEOF, 7, nil)
	for {
		f := h.next()
		if f.Type == agentproto.Ack {
			continue
		}
		if code, _, err := agentproto.ParseFileError(f.Payload); f.Type != agentproto.FileError || err != nil || code != agentproto.FileTooLarge {
			t.Fatalf("a write past its size: %s code %d (%v), want too large", f.Type, code, err)
		}
		break
	}
}
