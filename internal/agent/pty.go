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
	"fmt"
	"os"

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
		return s.start(f.Stream, command{argv: m.Argv, env: m.Env, dir: m.Dir, stdin: true, cols: m.Cols, rows: m.Rows})
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

// openTerminal makes the standard files of a command on a new terminal of the given
// size: the terminal for all three, its master side for the agent.
func openTerminal(cols, rows uint16) (*stdio, error) {
	master, tty, err := openPTY(cols, rows)
	if err != nil {
		return nil, &startError{agentproto.ReasonStart, "no terminal: " + err.Error()}
	}
	return &stdio{stdin: tty, stdout: tty, stderr: tty, outs: []*os.File{master}, in: master, tty: master}, nil
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
