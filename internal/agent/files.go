package agent

// File operations (agentproto.File): the file API through the agent, for a host that
// cannot reach the sandbox's files itself (its /tmp under gVisor, a remote engine, a
// Kubernetes pod). The work is package rootfiles', as on the host: confined to the folder
// the host names (an os.Root on the workspace's mount point or /tmp), so no path and no
// link the sandbox planted leads out of it, and a write lands whole or not at all. Files
// belong to the agent's user, the sandbox's.
//
// Each operation is a stream: it counts against MaxStreams, a Cancel or a new host ends
// it (a write's temporary file is removed), and a read sends at most FileWindow bytes
// ahead of what the host acknowledged.

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"sync"

	"github.com/sandboxd/sandboxd/internal/agentproto"
	"github.com/sandboxd/sandboxd/internal/rootfiles"
)

// handleFile handles the frames of file operations: File and FileConsumed.
func (s *server) handleFile(f agentproto.Frame) error {
	switch f.Type {
	case agentproto.File:
		m, err := agentproto.ParseFile(f.Payload)
		if err != nil {
			return err
		}
		return s.startFile(f.Stream, m)
	case agentproto.FileConsumed:
		n, err := agentproto.ParseAck(f.Payload)
		if err != nil {
			return err
		}
		st := s.stream(f.Stream)
		if st == nil {
			return nil // it ended meanwhile
		}
		if st.window == nil {
			return fmt.Errorf("%w: %s on stream %d, which reads no file", agentproto.ErrProtocol, f.Type, f.Stream)
		}
		return st.window.consumed(int(n))
	}
	return fmt.Errorf("%w: unexpected %s frame from the host", agentproto.ErrProtocol, f.Type)
}

func (s *server) startFile(id uint32, m agentproto.FileMsg) error {
	st := &stream{id: id, killed: make(chan struct{})}
	switch m.Op {
	case agentproto.OpWrite:
		st.in = newInbox()
	case agentproto.OpRead:
		st.window = newWindow()
	}
	if ok, err := s.register(st); !ok {
		if err != nil {
			return err
		}
		return s.send(nil, agentproto.FileError, id, agentproto.FileErrorPayload(agentproto.FileBusy,
			fmt.Sprintf("the agent runs %d streams already", s.cfg.MaxStreams)))
	}
	s.wg.Go(func() { s.runFile(st, m) })
	return nil
}

// errCanceled ends a write whose host canceled it (or went away).
var errCanceled = errors.New("canceled")

// runFile does st's operation and reports its end.
func (s *server) runFile(st *stream, m agentproto.FileMsg) {
	defer s.forget(st)
	// A Cancel, a new host or the host's silence kills the stream (its sweep finds no
	// process): what waits for the host stops waiting.
	done := make(chan struct{})
	defer close(done)
	s.wg.Go(func() {
		select {
		case <-st.killed:
			if st.in != nil {
				st.in.close()
			}
			if st.window != nil {
				st.window.close()
			}
		case <-done:
		}
	})
	if err := s.file(st, m); err != nil {
		_ = s.send(st, agentproto.FileError, st.id, agentproto.FileErrorPayload(fileCode(err), err.Error()))
	}
}

// file does one operation, sending what it answers but a failure, which it returns.
func (s *server) file(st *stream, m agentproto.FileMsg) error {
	root, err := os.OpenRoot(m.Root)
	if err != nil {
		return err
	}
	defer root.Close()
	switch m.Op {
	case agentproto.OpWrite:
		fi, err := rootfiles.Write(root, m.Path, &inboxReader{s: s, st: st}, m.MaxBytes, nil)
		if err != nil {
			return err
		}
		return s.sendStat(st, agentproto.FileInfo, fileStat(fi, false))
	case agentproto.OpRead:
		f, fi, err := rootfiles.Open(root, m.Path)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := s.sendStat(st, agentproto.FileInfo, fileStat(fi, false)); err != nil {
			return nil // nothing more can be sent
		}
		buf := make([]byte, agentproto.MaxPayload)
		for {
			n, err := f.Read(buf)
			if n > 0 {
				if !st.window.take(n) || s.send(st, agentproto.Stdout, st.id, buf[:n]) != nil {
					return nil // canceled, or nothing more can be sent
				}
			}
			if err == io.EOF {
				return s.send(st, agentproto.FileDone, st.id, nil)
			}
			if err != nil {
				return fmt.Errorf("read %q: %w", m.Path, err)
			}
		}
	case agentproto.OpList:
		entries, err := rootfiles.List(root, m.Path)
		if err != nil {
			return err
		}
		list := make([]agentproto.FileStat, len(entries))
		for i, fi := range entries {
			list[i] = fileStat(fi, true)
		}
		for _, p := range agentproto.AppendFileList(nil, list) {
			if err := s.send(st, agentproto.FileList, st.id, p); err != nil {
				return nil
			}
		}
		return s.send(st, agentproto.FileDone, st.id, nil)
	}
	return fmt.Errorf("operation %q", m.Op)
}

func (s *server) sendStat(st *stream, t agentproto.Type, stat agentproto.FileStat) error {
	p, _ := json.Marshal(stat)
	return s.send(st, t, st.id, p)
}

func fileStat(fi fs.FileInfo, named bool) agentproto.FileStat {
	st := agentproto.FileStat{Size: fi.Size(), Mode: uint32(fi.Mode()), MTimeNS: fi.ModTime().UnixNano()}
	if named {
		st.Name = fi.Name()
	}
	return st
}

// fileCode is the FileError code of err.
func fileCode(err error) byte {
	switch {
	case errors.Is(err, rootfiles.ErrNotFound), errors.Is(err, fs.ErrNotExist):
		return agentproto.FileNotFound
	case errors.Is(err, rootfiles.ErrInvalid):
		return agentproto.FileInvalid
	case errors.Is(err, rootfiles.ErrTooLarge):
		return agentproto.FileTooLarge
	case errors.Is(err, rootfiles.ErrFull):
		return agentproto.FileFull
	}
	return agentproto.FileIO
}

// inboxReader reads a write's bytes from its stream's inbox, acknowledging each chunk
// to the host once taken whole; the host's StdinEOF is its io.EOF, a kill errCanceled.
type inboxReader struct {
	s   *server
	st  *stream
	cur []byte
	n   int // the size of the chunk cur is the rest of
}

func (r *inboxReader) Read(p []byte) (int, error) {
	if len(r.cur) == 0 {
		chunk, ok := r.st.in.get()
		if !ok {
			if r.st.canceled.Load() {
				return 0, errCanceled
			}
			return 0, io.EOF
		}
		r.cur, r.n = chunk, len(chunk)
	}
	n := copy(p, r.cur)
	if r.cur = r.cur[n:]; len(r.cur) == 0 {
		r.st.in.done(r.n)
		_ = r.s.send(r.st, agentproto.Ack, r.st.id, agentproto.AckPayload(uint32(r.n)))
	}
	return n, nil
}

// window counts a read's bytes sent and not yet acknowledged by the host.
type window struct {
	mu     sync.Mutex
	cond   *sync.Cond
	out    int
	closed bool
}

func newWindow() *window {
	w := &window{}
	w.cond = sync.NewCond(&w.mu)
	return w
}

// take waits until n more bytes fit in agentproto.FileWindow and counts them; false
// once closed.
func (w *window) take(n int) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	for w.out+n > agentproto.FileWindow && !w.closed {
		w.cond.Wait()
	}
	if w.closed {
		return false
	}
	w.out += n
	return true
}

// consumed gives back n bytes the host took; more than were sent breaks the protocol.
func (w *window) consumed(n int) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if n > w.out {
		return fmt.Errorf("%w: %d bytes consumed of %d sent", agentproto.ErrProtocol, n, w.out)
	}
	w.out -= n
	w.cond.Broadcast()
	return nil
}

func (w *window) close() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.closed = true
	w.cond.Broadcast()
}
