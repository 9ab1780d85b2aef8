package docker

// The file API through the sandboxes' agents (agentproto.File; package agent does the
// work inside, with package rootfiles, as hostfiles does on the host). sandboxd resolves
// the client's path as hostfiles does (rootfiles.Resolve: the workspace's mount point,
// /tmp, no "..") and names the folder and the path in it; the agent confines the work to
// that folder. Whatever the agent answers is hostile: each frame is checked by
// agentproto, a listing is bounded, a read waits at most agentFileSilence for its next
// frame.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"sync"
	"time"

	"github.com/sandboxd/sandboxd/internal/agentproto"
	"github.com/sandboxd/sandboxd/internal/hostfiles"
	"github.com/sandboxd/sandboxd/internal/lifecycle"
	"github.com/sandboxd/sandboxd/internal/rootfiles"
	"github.com/sandboxd/sandboxd/internal/sandbox"
)

// agentFileSilence bounds the wait of a file read for the agent's next frame.
const agentFileSilence = 30 * time.Second

// agentCancelWait bounds the wait for the agent's answer to a canceled write.
const agentCancelWait = 5 * time.Second

// FilesVia says which way Files takes to a sandbox's files.
type FilesVia int

const (
	// FilesHost takes the host's way (package hostfiles) to the workspace, which is
	// faster (BENCHMARKS.md), and the sandbox's agent to its /tmp, which only the agent
	// sees as the sandbox does under any runtime (gVisor's /tmp is in its own kernel).
	FilesHost FilesVia = iota
	// FilesAgent takes the sandbox's agent to every file, as a host without access to
	// the sandbox's folders must.
	FilesAgent
)

// Files is the lifecycle's Files port on this runtime's sandboxes: through their agents
// (as via says) or through host, a Files on the host side (hostfiles), which also serves
// the sandboxes without a live agent.
type Files struct {
	r    *Runtime
	host lifecycle.Files
	via  FilesVia
}

var _ lifecycle.Files = (*Files)(nil)

// Files returns the file API of the runtime's sandboxes (see FilesVia); host serves
// what the agents do not.
func (r *Runtime) Files(host lifecycle.Files, via FilesVia) *Files {
	return &Files{r: r, host: host, via: via}
}

// WriteFile writes r to name, up to maxBytes, whole or not at all (see lifecycle.Files).
func (f *Files) WriteFile(ctx context.Context, s sandbox.Session, name string, r io.Reader, maxBytes int64) (lifecycle.FileInfo, error) {
	conn, m, area, err := f.route(ctx, s, name, agentproto.OpWrite)
	if err == nil && conn != nil {
		m.MaxBytes = maxBytes
		var fi lifecycle.FileInfo
		if fi, err = conn.writeFile(ctx, m, area, r); !errors.Is(err, errAgentNotStarted) {
			return fi, err
		}
	}
	if err != nil && !errors.Is(err, errAgentNotStarted) {
		return lifecycle.FileInfo{}, err
	}
	return f.host.WriteFile(ctx, s, name, r, maxBytes)
}

// OpenFile opens the regular file name for reading.
func (f *Files) OpenFile(ctx context.Context, s sandbox.Session, name string) (io.ReadCloser, lifecycle.FileInfo, error) {
	conn, m, area, err := f.route(ctx, s, name, agentproto.OpRead)
	if err == nil && conn != nil {
		rc, fi, err := conn.openFile(ctx, m, area)
		if !errors.Is(err, errAgentNotStarted) {
			return rc, fi, err
		}
	}
	if err != nil && !errors.Is(err, errAgentNotStarted) {
		return nil, lifecycle.FileInfo{}, err
	}
	return f.host.OpenFile(ctx, s, name)
}

// ListDir lists the folder name.
func (f *Files) ListDir(ctx context.Context, s sandbox.Session, name string) ([]lifecycle.FileInfo, error) {
	conn, m, area, err := f.route(ctx, s, name, agentproto.OpList)
	if err == nil && conn != nil {
		list, err := conn.listDir(ctx, m, area)
		if !errors.Is(err, errAgentNotStarted) {
			return list, err
		}
	}
	if err != nil && !errors.Is(err, errAgentNotStarted) {
		return nil, err
	}
	return f.host.ListDir(ctx, s, name)
}

// route says where a call on name goes: to the channel of the sandbox's agent, as the
// operation m (and area, "" or rootfiles.TmpArea, which the infos' paths start with), or
// to the host (no channel).
func (f *Files) route(ctx context.Context, s sandbox.Session, name, op string) (*agentConn, agentproto.FileMsg, string, error) {
	if f.r.agents == nil {
		return nil, agentproto.FileMsg{}, "", nil
	}
	p := f.r.profiles.Of(s.AgentID)
	rel, tmp, err := rootfiles.Resolve(name, p.Workspace, true)
	switch {
	case err != nil:
		return nil, agentproto.FileMsg{}, "", filesErr(err)
	case !tmp && f.via == FilesHost:
		return nil, agentproto.FileMsg{}, "", nil
	case tmp && !p.FilesTmp:
		return nil, agentproto.FileMsg{}, "", fmt.Errorf("docker: the profile of agent %q gives the file API no access to /tmp: %w", s.AgentID, sandbox.ErrInvalid)
	}
	conn, _, err := f.r.agents.get(ctx, s.ContainerID)
	if err != nil || conn == nil {
		return nil, agentproto.FileMsg{}, "", err
	}
	m := agentproto.FileMsg{Op: op, Root: conn.workdir, Path: rel}
	area := ""
	if tmp {
		m.Root, area = rootfiles.TmpArea, rootfiles.TmpArea
	}
	return conn, m, area, nil
}

// filesErr translates an error of package rootfiles into the domain's (as hostfiles does).
func filesErr(err error) error { return fmt.Errorf("docker: files: %w", hostfiles.Domain(err)) }

// fileOp opens a stream for m on the channel; errAgentNotStarted when it could not be
// sent.
func (c *agentConn) fileOp(m agentproto.FileMsg) (uint32, *agentStream, error) {
	p, err := json.Marshal(m)
	if err != nil || len(p) > agentproto.MaxPayload {
		return 0, nil, fmt.Errorf("docker: files in %s: path of %d bytes, too long: %w", c.containerID, len(m.Path), sandbox.ErrInvalid)
	}
	id, st := c.open(0)
	if err := c.write(agentproto.File, id, p); err != nil {
		c.closeStream(id, st)
		return 0, nil, errAgentNotStarted
	}
	return id, st, nil
}

// nextFileEvent waits for the stream's next event.
func (c *agentConn) nextFileEvent(ctx context.Context, st *agentStream, silence <-chan time.Time) (agentEvent, error) {
	select {
	case ev := <-st.events:
		return ev, nil
	case <-ctx.Done():
		return agentEvent{}, ctx.Err()
	case <-silence:
		return agentEvent{}, fmt.Errorf("docker: files in %s: the agent said nothing for %s: %w", c.containerID, agentFileSilence, sandbox.ErrUnavailable)
	case <-c.closed:
		return agentEvent{}, fmt.Errorf("docker: files in %s: the agent's channel closed: %w: %w", c.containerID, sandbox.ErrUnavailable, c.err)
	}
}

// unexpected is the error of a frame that has no place in a file operation.
func (c *agentConn) unexpected(ev agentEvent) error {
	if ev.t == agentproto.FileError {
		return fileFailure(c.containerID, ev.reason, ev.msg)
	}
	return fmt.Errorf("docker: files in %s: %s frame from the agent: %w", c.containerID, ev.t, sandbox.ErrUnavailable)
}

// fileFailure is the error of a file operation the agent reports failed.
func fileFailure(containerID string, code byte, msg string) error {
	var kind error
	switch code {
	case agentproto.FileNotFound:
		kind = sandbox.ErrNotFound
	case agentproto.FileInvalid:
		kind = sandbox.ErrInvalid
	case agentproto.FileTooLarge:
		kind = sandbox.ErrTooLarge
	case agentproto.FileFull:
		kind = sandbox.ErrFull
	case agentproto.FileBusy:
		kind = sandbox.ErrBusy
	default:
		return fmt.Errorf("docker: files in %s: %s", containerID, msg)
	}
	return fmt.Errorf("docker: files in %s: %s: %w", containerID, msg, kind)
}

// fileInfo is what the agent says of the entry at rel (and name, for a listing) in area.
func fileInfo(area, rel string, st agentproto.FileStat) lifecycle.FileInfo {
	return lifecycle.FileInfo{Path: path.Join(area, rel, st.Name), Size: st.Size, Mode: fs.FileMode(st.Mode),
		ModTime: time.Unix(0, st.MTimeNS).UTC()}
}

// writeFile runs a write: r's bytes (at most m.MaxBytes+1, which the agent refuses) go
// as input; a failure to read r cancels it, and is its error. It returns once its copy of
// r has stopped.
func (c *agentConn) writeFile(ctx context.Context, m agentproto.FileMsg, area string, r io.Reader) (lifecycle.FileInfo, error) {
	id, st, err := c.fileOp(m)
	if err != nil {
		return lifecycle.FileInfo{}, err
	}
	defer c.closeStream(id, st)
	stop := make(chan struct{})
	fed := make(chan error, 1)
	var feeding sync.WaitGroup
	feeding.Go(func() { fed <- c.feed(id, st, io.LimitReader(r, m.MaxBytes+1), stop) })
	defer func() {
		close(stop)
		feeding.Wait()
	}()
	for {
		select {
		case err := <-fed:
			fed = nil // the feed ended: the agent's answer is next
			if err != nil {
				c.cancelWrite(id, st)
				return lifecycle.FileInfo{}, err
			}
		case ev := <-st.events:
			if ev.t != agentproto.FileInfo {
				return lifecycle.FileInfo{}, c.unexpected(ev)
			}
			return fileInfo(area, m.Path, ev.stat), nil
		case <-ctx.Done():
			c.cancelWrite(id, st)
			return lifecycle.FileInfo{}, ctx.Err()
		case <-c.closed:
			return lifecycle.FileInfo{}, fmt.Errorf("docker: files in %s: the agent's channel closed: %w: %w", c.containerID, sandbox.ErrUnavailable, c.err)
		}
	}
}

// cancelWrite cancels a write and waits (a few seconds at most) for the agent's answer,
// which it sends once the temporary file is removed: a write that failed has left
// nothing when WriteFile returns.
func (c *agentConn) cancelWrite(id uint32, st *agentStream) {
	_ = c.write(agentproto.Cancel, id, nil)
	t := time.NewTimer(agentCancelWait)
	defer t.Stop()
	for {
		select {
		case ev := <-st.events:
			if ev.t == agentproto.FileError || ev.t == agentproto.FileInfo {
				return
			}
		case <-t.C:
			return
		case <-c.closed:
			return
		}
	}
}

// openFile runs a read: the file's info, then a reader of its bytes.
func (c *agentConn) openFile(ctx context.Context, m agentproto.FileMsg, area string) (io.ReadCloser, lifecycle.FileInfo, error) {
	id, st, err := c.fileOp(m)
	if err != nil {
		return nil, lifecycle.FileInfo{}, err
	}
	ev, err := c.nextFileEvent(ctx, st, time.After(agentFileSilence))
	if err == nil && ev.t != agentproto.FileInfo {
		err = c.unexpected(ev)
	}
	if err != nil {
		_ = c.write(agentproto.Cancel, id, nil)
		c.closeStream(id, st)
		return nil, lifecycle.FileInfo{}, err
	}
	return &agentFile{c: c, id: id, st: st}, fileInfo(area, m.Path, ev.stat), nil
}

// agentFile reads a file's bytes from its stream.
type agentFile struct {
	c      *agentConn
	id     uint32
	st     *agentStream
	cur    []byte
	err    error // once the stream ended: io.EOF or why not
	closed bool
}

func (f *agentFile) Read(p []byte) (int, error) {
	for len(f.cur) == 0 {
		if f.err != nil {
			return 0, f.err
		}
		ev, err := f.c.nextFileEvent(context.Background(), f.st, time.After(agentFileSilence))
		switch {
		case err != nil:
			f.err = err
		case ev.t == agentproto.Stdout:
			f.cur = ev.data
			// Taken: the agent may send as much again.
			_ = f.c.write(agentproto.FileConsumed, f.id, agentproto.AckPayload(uint32(len(ev.data))))
		case ev.t == agentproto.FileDone:
			f.err = io.EOF
		default:
			f.err = f.c.unexpected(ev)
		}
	}
	n := copy(p, f.cur)
	f.cur = f.cur[n:]
	return n, nil
}

// Close ends the read, canceling what the agent has not sent yet.
func (f *agentFile) Close() error {
	if f.closed {
		return nil
	}
	f.closed = true
	if f.err != io.EOF {
		_ = f.c.write(agentproto.Cancel, f.id, nil)
	}
	f.c.closeStream(f.id, f.st)
	return nil
}

// listDir runs a listing: at most MaxListEntries entries.
func (c *agentConn) listDir(ctx context.Context, m agentproto.FileMsg, area string) ([]lifecycle.FileInfo, error) {
	id, st, err := c.fileOp(m)
	if err != nil {
		return nil, err
	}
	defer c.closeStream(id, st)
	out := []lifecycle.FileInfo{}
	for {
		ev, err := c.nextFileEvent(ctx, st, nil)
		if err != nil {
			_ = c.write(agentproto.Cancel, id, nil)
			return nil, err
		}
		switch ev.t {
		case agentproto.FileList:
			if len(out)+len(ev.list) > rootfiles.MaxListEntries {
				_ = c.write(agentproto.Cancel, id, nil)
				return nil, fmt.Errorf("docker: files in %s: folder %q has more than %d entries, too many to list: %w", c.containerID, m.Path, rootfiles.MaxListEntries, sandbox.ErrInvalid)
			}
			for _, e := range ev.list {
				out = append(out, fileInfo(area, m.Path, e))
			}
		case agentproto.FileDone:
			return out, nil
		default:
			return nil, c.unexpected(ev)
		}
	}
}

// parseFile checks and decodes the payload of a file operation's answer f.
func (ev *agentEvent) parseFile(f agentproto.Frame) (err error) {
	switch f.Type {
	case agentproto.FileInfo:
		ev.stat, err = agentproto.ParseFileInfo(f.Payload)
	case agentproto.FileList:
		ev.list, err = agentproto.ParseFileList(f.Payload)
	case agentproto.FileError:
		ev.reason, ev.msg, err = agentproto.ParseFileError(f.Payload)
	}
	return err
}
