package agent

// Commands on a pseudo-terminal (agentproto.OpenPTY): sandboxd's interactive terminal.
//
// Such a command is a stream like any other: it runs in a session of its own, carries a
// kill token, counts against MaxStreams, and a Cancel, a new host or the host's silence
// kills it with everything it started. The terminal is its controlling terminal (it
// leads the session, so job control works); the host's input is typed into it, a Resize
// changes its size (the kernel tells the foreground group with SIGWINCH), and its one
// output goes to the host as Stdout frames, without a cap. When the command ends, what
// it left running in its session or with its token is killed too: nothing could read
// the terminal any more.

import (
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"time"

	"github.com/creack/pty"
	"golang.org/x/sys/unix"

	"github.com/sandboxd/sandboxd/internal/agentproto"
)

// handlePTY handles the frames of terminals: OpenPTY and Resize.
func (s *server) handlePTY(f agentproto.Frame) error {
	switch f.Type {
	case agentproto.OpenPTY:
		m, err := agentproto.ParsePTY(f.Payload)
		if err != nil {
			return err
		}
		return s.startPTY(f.Stream, m)
	case agentproto.Resize:
		cols, rows, err := agentproto.ParseResize(f.Payload)
		if err != nil {
			return err
		}
		st := s.stream(f.Stream)
		if st == nil {
			return nil // it ended meanwhile
		}
		if st.tty == nil {
			return fmt.Errorf("%w: resize of stream %d, which has no terminal", agentproto.ErrProtocol, f.Stream)
		}
		_ = setSize(st.tty, cols, rows) // a terminal closed meanwhile keeps none
		return nil
	}
	return fmt.Errorf("%w: unexpected %s frame from the host", agentproto.ErrProtocol, f.Type)
}

func (s *server) startPTY(id uint32, m agentproto.PTYMsg) error {
	s.mu.Lock()
	if _, dup := s.streams[id]; dup {
		s.mu.Unlock()
		return fmt.Errorf("%w: stream %d started twice", agentproto.ErrProtocol, id)
	}
	st := &stream{id: id, token: rand.Text(), killed: make(chan struct{}), in: newInbox()}
	busy := len(s.streams) >= s.cfg.MaxStreams
	if !busy {
		s.streams[id] = st
	}
	s.mu.Unlock()
	if busy {
		return s.send(nil, agentproto.Failed, id, agentproto.FailedPayload(agentproto.ReasonBusy,
			fmt.Sprintf("the agent runs %d commands already", s.cfg.MaxStreams)))
	}
	p, err := s.launchPTY(st, m)
	if err != nil {
		s.forget(st)
		var se *startError
		if !errors.As(err, &se) {
			se = &startError{agentproto.ReasonStart, err.Error()}
		}
		return s.send(st, agentproto.Failed, id, se.payload())
	}
	if err := s.send(st, agentproto.Started, id, nil); err != nil {
		return err
	}
	s.wg.Go(func() { s.runPTY(st, p) })
	return nil
}

// launchPTY starts st's command on a new terminal, in the reader's loop (as launch).
func (s *server) launchPTY(st *stream, m agentproto.PTYMsg) (*exec.Cmd, error) {
	env := mergeEnv(s.cfg.Env, m.Env, agentproto.TokenVar+"="+st.token)
	if m.Dir != "" {
		if fi, err := os.Stat(m.Dir); err != nil || !fi.IsDir() {
			return nil, &startError{agentproto.ReasonWorkdir, fmt.Sprintf("no working folder %s", m.Dir)}
		}
	}
	path, err := lookPath(m.Argv[0], envValue(env, "PATH"), m.Dir)
	if err != nil {
		return nil, &startError{agentproto.ReasonNotFound, err.Error()}
	}
	master, tty, err := openPTY(m.Cols, m.Rows)
	if err != nil {
		return nil, &startError{agentproto.ReasonStart, "no terminal: " + err.Error()}
	}
	cmd := &exec.Cmd{
		Path: path, Args: m.Argv, Env: env, Dir: m.Dir,
		Stdin: tty, Stdout: tty, Stderr: tty,
		// A session of its own, whose controlling terminal is tty (its fd 0).
		SysProcAttr: &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0},
	}
	s.procMu.Lock()
	err = cmd.Start()
	if err == nil {
		st.pid = cmd.Process.Pid
	}
	s.procMu.Unlock()
	_ = tty.Close() // the command holds its own
	if err != nil {
		_ = master.Close()
		return nil, &startError{agentproto.ReasonStart, err.Error()}
	}
	st.tty = master
	return cmd, nil
}

// openPTY opens a terminal of the given size and returns its master side, in the
// runtime's poller (a Close ends a Read or Write blocked on it), and its slave side.
func openPTY(cols, rows uint16) (master, tty *os.File, err error) {
	p, tty, err := pty.Open()
	if err != nil {
		return nil, nil, err
	}
	// pty.Open's ioctls leave p blocking (they go through Fd), and a Read blocked on a
	// blocking file outlives its Close: a copy of it, non-blocking, is what is used.
	fd, err := unix.FcntlInt(p.Fd(), unix.F_DUPFD_CLOEXEC, 0)
	_ = p.Close()
	if err == nil {
		if err = unix.SetNonblock(fd, true); err != nil {
			_ = unix.Close(fd)
		}
	}
	if err != nil {
		_ = tty.Close()
		return nil, nil, err
	}
	master = os.NewFile(uintptr(fd), "/dev/ptmx")
	if err := setSize(master, cols, rows); err != nil {
		_ = master.Close()
		_ = tty.Close()
		return nil, nil, err
	}
	return master, tty, nil
}

// setSize sets the size of the terminal whose master side is f.
func setSize(f *os.File, cols, rows uint16) error {
	sc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var ioErr error
	if err := sc.Control(func(fd uintptr) {
		ioErr = unix.IoctlSetWinsize(int(fd), unix.TIOCSWINSZ, &unix.Winsize{Row: rows, Col: cols})
	}); err != nil {
		return err
	}
	return ioErr
}

// runPTY waits for st's command to end, forwarding its terminal's output and typing the
// host's input meanwhile, kills what it left behind, and reports its end.
func (s *server) runPTY(st *stream, cmd *exec.Cmd) {
	defer s.forget(st)
	out := make(chan struct{})
	s.wg.Go(func() {
		defer close(out)
		s.forward(st, agentproto.Stdout, st.tty) // to the end of the output (EIO once no one holds the terminal)
	})
	s.wg.Go(func() { s.typeInto(st, st.tty) })
	waitErr := cmd.Wait()
	s.kill(st)
	// The output ends once the last process holding the terminal is gone: the sweep's
	// end, but for a process that escaped it (a new session, a cleared environment).
	select {
	case <-out:
	case <-st.killed:
		select {
		case <-out:
		case <-time.After(time.Second):
		}
	}
	_ = st.tty.Close()
	<-out
	st.in.close() // input that comes now is dropped
	msg := agentproto.ExitMsg{Canceled: st.canceled.Load()}
	msg.Code, msg.Signal = exitStatus(waitErr)
	_ = s.send(st, agentproto.Exit, st.id, msg.Payload())
}

// typeInto writes the host's input to the terminal, acknowledging each chunk once
// written (or dropped, once the terminal is closed). The host's StdinEOF ends it, not
// the terminal.
func (s *server) typeInto(st *stream, w *os.File) {
	broken := false
	for {
		p, ok := st.in.get()
		if !ok {
			return
		}
		if !broken {
			if _, err := w.Write(p); err != nil {
				broken = true
			}
		}
		st.in.done(len(p))
		_ = s.send(st, agentproto.Ack, st.id, agentproto.AckPayload(uint32(len(p))))
	}
}

// exitStatus is how a command that Wait returned waitErr for ended: its exit code
// (128+signal for a signal), and the signal.
func exitStatus(waitErr error) (code int32, sig uint8) {
	var exitErr *exec.ExitError
	switch {
	case waitErr == nil:
		return 0, 0
	case errors.As(waitErr, &exitErr):
		ws, _ := exitErr.Sys().(syscall.WaitStatus)
		if ws.Signaled() {
			return 128 + int32(ws.Signal()), uint8(ws.Signal())
		}
		if c := ws.ExitStatus(); c >= 0 && c <= 255 {
			return int32(c), 0
		}
	}
	return 255, 0
}
