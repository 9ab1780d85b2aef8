// Package agent is the in-sandbox agent's work (cmd/sandboxd-agent is its main): it
// serves agentproto frames from the host on one reader and writer (the container's
// attached stdin and stdout), and runs the commands they ask for as its own children, as
// the sandbox's user it runs as.
//
// Each command runs in a session of its own (setsid), so its pid names its session and
// process group, and with a kill token of its own in its environment
// (agentproto.TokenVar). At its timeout, on a Cancel, when a new host attaches (Hello) or
// when the host has sent nothing for Config.IdleKill while commands run (the host pings
// every few seconds), the agent kills it with everything it started: SIGKILL to the
// group, then sweeps of /proc for what is left of the session and for every process
// carrying the token, until none lives. The kill starts no process, so it works in a
// sandbox whose pids a fork bomb holds. Output is forwarded as it comes, cut at the
// source at the command's cap (one byte past it, so the host sees that it was cut).
//
// The host's frames are checked like any input; a violation ends Serve (its commands
// killed), since the channel is out of step from then on.
package agent

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/sandboxd/sandboxd/internal/agentproto"
)

// Defaults of Config.
const (
	DefaultIdleKill   = 30 * time.Second
	DefaultMaxStreams = 64
)

// Config configures Serve.
type Config struct {
	// Env is the environment commands start from (the agent's own, os.Environ()); a
	// command's Env adds to it.
	Env []string
	// IdleKill: with commands running and no frame from the host for this long, the host
	// is taken as gone and they are killed (default DefaultIdleKill).
	IdleKill time.Duration
	// MaxStreams bounds the commands running at once (default DefaultMaxStreams); one
	// more fails to start (agentproto.ReasonBusy).
	MaxStreams int
}

// server is one Serve.
type server struct {
	cfg Config

	wmu sync.Mutex // held for each frame written, and while muting streams
	w   io.Writer
	wb  []byte

	// procMu orders process starts against kill sweeps: a start holds it exclusively
	// (and registers its pid while holding it), each sweep round shares it, so a round
	// knows every live command's pid (see sweep).
	procMu  sync.RWMutex
	mu      sync.Mutex // guards streams
	streams map[uint32]*stream

	lastFrame atomic.Int64 // unix nanoseconds of the host's last frame
	wg        sync.WaitGroup
}

// stream is one command.
type stream struct {
	id    uint32
	token string
	pid   int // 0 until started

	muted atomic.Bool // its host has gone: nothing more of it is written (under wmu)

	killOnce sync.Once
	timedOut atomic.Bool
	canceled atomic.Bool
	killed   chan struct{} // closed once the kill sweep ended

	out       atomic.Int64 // output bytes forwarded
	cap       int64        // output forwarded at most: cap+1 bytes (0: no cap)
	truncated atomic.Bool

	in *inbox // nil without input

	tty *os.File // a terminal's master side (pty.go); nil for a command without one

	window *window // a file read's bytes not yet taken by the host (files.go); nil otherwise
}

// Serve serves the host's frames from r, writing its own to w, until r ends (io.EOF:
// nil) or breaks the protocol (an error wrapping agentproto.ErrProtocol) or w fails.
// It kills every command it started before it returns.
func Serve(r io.Reader, w io.Writer, cfg Config) error {
	if cfg.IdleKill <= 0 {
		cfg.IdleKill = DefaultIdleKill
	}
	if cfg.MaxStreams <= 0 {
		cfg.MaxStreams = DefaultMaxStreams
	}
	s := &server{cfg: cfg, w: w, streams: map[uint32]*stream{}}
	s.lastFrame.Store(time.Now().UnixNano())
	ctx, stop := context.WithCancel(context.Background())
	defer func() {
		stop()
		s.killAll(true)
		s.wg.Wait()
	}()
	s.wg.Go(func() { s.watchdog(ctx) })
	fr := agentproto.NewReader(r)
	for {
		f, err := fr.ReadFrame()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("agent: read: %w", err)
		}
		s.lastFrame.Store(time.Now().UnixNano())
		if err := s.handle(f); err != nil {
			return err
		}
	}
}

func (s *server) handle(f agentproto.Frame) error {
	switch f.Type {
	case agentproto.Hello:
		nonce, err := agentproto.ParseHello(f.Payload)
		if err != nil {
			return err
		}
		// A new host: what the previous one started is nobody's now.
		s.killAll(true)
		return s.send(nil, agentproto.Ready, 0, agentproto.HelloPayload(nonce))
	case agentproto.Ping:
		return s.send(nil, agentproto.Pong, 0, f.Payload)
	case agentproto.Start:
		m, err := agentproto.ParseStart(f.Payload)
		if err != nil {
			return err
		}
		return s.start(f.Stream, startCommand(m))
	case agentproto.Stdin, agentproto.StdinEOF:
		st := s.stream(f.Stream)
		if st == nil {
			return nil // it ended meanwhile
		}
		if st.in == nil {
			return fmt.Errorf("%w: input for stream %d, which takes none", agentproto.ErrProtocol, f.Stream)
		}
		if f.Type == agentproto.StdinEOF {
			st.in.close()
			return nil
		}
		return st.in.put(f.Payload)
	case agentproto.Cancel:
		if st := s.stream(f.Stream); st != nil {
			st.canceled.Store(true)
			s.kill(st)
		}
		return nil
	case agentproto.OpenPTY, agentproto.Resize:
		return s.handlePTY(f)
	case agentproto.File, agentproto.FileConsumed:
		return s.handleFile(f)
	}
	return fmt.Errorf("%w: unexpected %s frame from the host", agentproto.ErrProtocol, f.Type)
}

func (s *server) stream(id uint32) *stream {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.streams[id]
}

// send writes one frame, unless st (nil for the channel's own frames) is muted.
func (s *server) send(st *stream, t agentproto.Type, id uint32, p []byte) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if st != nil && st.muted.Load() {
		return nil
	}
	s.wb = agentproto.AppendFrame(s.wb[:0], t, id, p)
	_, err := s.w.Write(s.wb)
	return err
}

// killAll kills every command; with mute, nothing more of them is written (their host
// has gone).
func (s *server) killAll(mute bool) {
	s.mu.Lock()
	all := make([]*stream, 0, len(s.streams))
	for id, st := range s.streams {
		all = append(all, st)
		if mute {
			delete(s.streams, id) // the next host may use the id again
		}
	}
	s.mu.Unlock()
	if mute {
		s.wmu.Lock()
		for _, st := range all {
			st.muted.Store(true)
		}
		s.wmu.Unlock()
	}
	for _, st := range all {
		st.canceled.Store(true)
		s.kill(st)
	}
}

// watchdog kills every command when the host has been silent for IdleKill.
func (s *server) watchdog(ctx context.Context) {
	t := time.NewTicker(s.cfg.IdleKill / 4)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if time.Since(time.Unix(0, s.lastFrame.Load())) > s.cfg.IdleKill {
				s.killAll(false)
			}
		}
	}
}

// command is a command the host asked for: by Start on pipes, or by OpenPTY on a
// terminal of its own (pty.go). Both run alike; the terminal's differences are noted
// where they are made.
type command struct {
	argv, env []string
	dir       string
	timeout   time.Duration // > 0: killed after it
	cap       int64         // > 0: output forwarded at most, plus one byte
	stdin     bool          // the host sends input once told Started
	// cols and rows > 0: on a terminal of that size, whose one output is sent as Stdout
	// and whose input is typed (always taken).
	cols, rows uint16
}

// startCommand is the command a Start asks for.
func startCommand(m agentproto.StartMsg) command {
	return command{argv: m.Argv, env: m.Env, dir: m.Dir,
		timeout: m.Timeout(), cap: m.OutputCap, stdin: m.Stdin}
}

// register adds st to the running streams: an error when its id runs already, false
// when MaxStreams do.
func (s *server) register(st *stream) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, dup := s.streams[st.id]; dup {
		return false, fmt.Errorf("%w: stream %d started twice", agentproto.ErrProtocol, st.id)
	}
	if len(s.streams) >= s.cfg.MaxStreams {
		return false, nil
	}
	s.streams[st.id] = st
	return true, nil
}

func (s *server) start(id uint32, c command) error {
	st := &stream{id: id, token: rand.Text(), killed: make(chan struct{}), cap: c.cap}
	if c.stdin {
		st.in = newInbox()
	}
	if ok, err := s.register(st); !ok {
		if err != nil {
			return err
		}
		return s.send(nil, agentproto.Failed, id, agentproto.FailedPayload(agentproto.ReasonBusy,
			fmt.Sprintf("the agent runs %d commands already", s.cfg.MaxStreams)))
	}
	p, err := s.launch(st, c)
	if err != nil {
		s.forget(st)
		var se *startError
		if !errors.As(err, &se) {
			se = &startError{agentproto.ReasonStart, err.Error()}
		}
		return s.send(st, agentproto.Failed, id, se.payload())
	}
	// Only a command that takes input is told started: the host sends the input then.
	// Any other's Started would be one more frame through the engine for nothing.
	if c.stdin {
		if err := s.send(st, agentproto.Started, id, nil); err != nil {
			return err
		}
	}
	s.wg.Go(func() { s.run(st, c, p) })
	return nil
}

// forget removes st from the running streams.
func (s *server) forget(st *stream) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.streams[st.id] == st {
		delete(s.streams, st.id)
	}
}

// startError is why a command did not start.
type startError struct {
	reason byte
	msg    string
}

func (e *startError) Error() string   { return e.msg }
func (e *startError) payload() []byte { return agentproto.FailedPayload(e.reason, e.msg) }

// stdio is a command's standard files: its own ends, which the agent closes once it
// started it, and the agent's.
type stdio struct {
	stdin, stdout, stderr *os.File // the command's; stdin nil: none (/dev/null)

	outs []*os.File // the agent's ends of the output, sent as Stdout, then Stderr frames
	in   *os.File   // the agent's end of the input; nil: none
	tty  *os.File   // a terminal's master side (outs[0] and in), nil on pipes
}

// outputTypes are the frame types of stdio.outs.
var outputTypes = [...]agentproto.Type{agentproto.Stdout, agentproto.Stderr}

// openPipes makes the pipes of a command, with one for its input if it takes any.
func openPipes(stdin bool) (*stdio, error) {
	var all []*os.File
	var err error
	pipe := func() (r, w *os.File) {
		if err == nil {
			if r, w, err = os.Pipe(); err == nil {
				all = append(all, r, w)
			}
		}
		return r, w
	}
	files := &stdio{}
	var outR, errR *os.File
	outR, files.stdout = pipe()
	errR, files.stderr = pipe()
	if stdin {
		files.stdin, files.in = pipe()
	}
	if err != nil {
		closeAll(all...)
		return nil, &startError{agentproto.ReasonStart, err.Error()}
	}
	files.outs = []*os.File{outR, errR}
	return files, nil
}

// proc is a started command and the agent's ends of its standard files.
type proc struct {
	cmd *exec.Cmd
	*stdio
}

// launch starts st's command. It runs in the reader's loop, so that every later frame of
// the stream (a Cancel, a Resize) finds it started.
func (s *server) launch(st *stream, c command) (*proc, error) {
	env := mergeEnv(s.cfg.Env, c.env, agentproto.TokenVar+"="+st.token)
	if c.dir != "" {
		if fi, err := os.Stat(c.dir); err != nil || !fi.IsDir() {
			return nil, &startError{agentproto.ReasonWorkdir, fmt.Sprintf("no working folder %s", c.dir)}
		}
	}
	path, err := lookPath(c.argv[0], envValue(env, "PATH"), c.dir)
	if err != nil {
		return nil, &startError{agentproto.ReasonNotFound, err.Error()}
	}
	var files *stdio
	if c.cols > 0 {
		files, err = openTerminal(c.cols, c.rows)
	} else {
		files, err = openPipes(c.stdin)
	}
	if err != nil {
		return nil, err
	}
	cmd := &exec.Cmd{
		Path: path, Args: c.argv, Env: env, Dir: c.dir,
		Stdout: files.stdout, Stderr: files.stderr,
		SysProcAttr: &syscall.SysProcAttr{Setsid: true},
	}
	if files.stdin != nil {
		cmd.Stdin = files.stdin
	}
	if files.tty != nil {
		// Its session's controlling terminal is the terminal (its fd 0).
		cmd.SysProcAttr.Setctty, cmd.SysProcAttr.Ctty = true, 0
	}
	s.procMu.Lock()
	err = cmd.Start()
	if err == nil {
		st.pid = cmd.Process.Pid
	}
	s.procMu.Unlock()
	closeAll(files.stdin, files.stdout, files.stderr) // the child holds its own
	if err != nil {
		closeAll(append(files.outs, files.in)...)
		return nil, &startError{agentproto.ReasonStart, err.Error()}
	}
	st.tty = files.tty
	return &proc{cmd: cmd, stdio: files}, nil
}

// run waits for st's command to end, forwarding its output and input meanwhile, and
// reports its end.
func (s *server) run(st *stream, c command, p *proc) {
	defer s.forget(st)
	var timer *time.Timer
	if c.timeout > 0 {
		timer = time.AfterFunc(c.timeout, func() {
			st.timedOut.Store(true)
			s.kill(st)
		})
	}
	var outs sync.WaitGroup
	for i, f := range p.outs {
		// A terminal's output ends with EIO once no one holds the terminal.
		outs.Go(func() { s.forward(st, outputTypes[i], f) })
	}
	if p.in != nil {
		s.wg.Go(func() {
			s.feed(st, p.in)
			if p.tty == nil {
				_ = p.in.Close() // the command's end of input; a terminal's is the host's StdinEOF alone
			}
		})
	}
	waitErr := p.cmd.Wait()
	if p.tty != nil {
		// Nothing can read the terminal any more: what the command left running in its
		// session or with its token goes too.
		s.kill(st)
	}
	// The output ends when the last process holding it does. Once a kill has swept
	// the command away, a process that escaped it (a new session, a cleared
	// environment) may still hold it: stop reading after a moment.
	ended := make(chan struct{})
	go func() { outs.Wait(); close(ended) }()
	select {
	case <-ended:
	case <-st.killed:
		select {
		case <-ended:
		case <-time.After(time.Second):
		}
	}
	closeAll(p.outs...)
	<-ended
	if timer != nil {
		timer.Stop()
	}
	if st.in != nil {
		st.in.close() // input that comes now is dropped
	}
	msg := agentproto.ExitMsg{TimedOut: st.timedOut.Load(), Canceled: st.canceled.Load(), Truncated: st.truncated.Load()}
	msg.Code, msg.Signal = exitStatus(waitErr)
	_ = s.send(st, agentproto.Exit, st.id, msg.Payload())
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

// forward sends what the command writes to f as frames of type t, up to the stream's
// cap (plus one byte), and drains the rest so the command never blocks on it.
func (s *server) forward(st *stream, t agentproto.Type, f *os.File) {
	buf := make([]byte, 32<<10)
	for {
		n, err := f.Read(buf)
		if n > 0 {
			p := buf[:n]
			if st.cap > 0 {
				left := st.cap + 1 - st.out.Add(int64(n)) + int64(n)
				if left < int64(n) {
					st.truncated.Store(true)
					p = p[:max(left, 0)]
				}
			}
			if len(p) > 0 {
				if s.send(st, t, st.id, p) != nil {
					st.canceled.Store(true)
					s.kill(st)
				}
			}
		}
		if err != nil {
			return
		}
	}
}

// feed writes the host's input to the command until the host's StdinEOF (or the
// command's end), acknowledging each chunk once written (or dropped: a command that
// closed its input, or a closed terminal, loses the rest).
func (s *server) feed(st *stream, w *os.File) {
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

// kill kills st's command and all it started, once; st.killed is closed when done.
func (s *server) kill(st *stream) {
	st.killOnce.Do(func() {
		s.wg.Go(func() {
			defer close(st.killed)
			s.sweep(st)
		})
	})
}

// sweep kills st's session and group and every process carrying its token until none
// is left (or gives up after a few seconds: what resists dies with the sandbox).
//
// A pid is not given again while a process of its session or group lives, so the
// command's pid names its session until the last of them is gone; from then on it may
// name the next command's. Each round holds procMu shared, so no command starts during
// it, and a round that finds the pid leading another live command stops: the session it
// named is gone.
func (s *server) sweep(st *stream) {
	for wait, round := time.Millisecond, 0; round < 200; wait, round = min(2*wait, 50*time.Millisecond), round+1 {
		if !s.sweepRound(st) {
			return
		}
		time.Sleep(wait)
	}
}

// sweepRound kills what it finds of st and reports whether it found any.
func (s *server) sweepRound(st *stream) bool {
	s.procMu.RLock()
	defer s.procMu.RUnlock()
	if st.pid == 0 {
		return false // it never started
	}
	s.mu.Lock()
	for _, other := range s.streams {
		if other != st && other.pid == st.pid {
			s.mu.Unlock()
			return false
		}
	}
	s.mu.Unlock()
	found := false
	if syscall.Kill(-st.pid, syscall.SIGKILL) == nil {
		found = true
	}
	tok := []byte(agentproto.TokenVar + "=" + st.token + "\x00")
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		state, sid, ok := procStat(pid)
		if !ok || state == 'Z' || state == 'X' {
			continue
		}
		hit := sid == st.pid
		if !hit {
			env, _ := os.ReadFile("/proc/" + e.Name() + "/environ")
			hit = bytes.Contains(append(env, 0), tok)
		}
		if hit {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			found = true
		}
	}
	return found
}

// procStat reads a process's state and session id from /proc/<pid>/stat.
func procStat(pid int) (state byte, sid int, ok bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, 0, false
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, 0, false
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 4 || len(f[0]) != 1 {
		return 0, 0, false
	}
	sid, err = strconv.Atoi(f[3])
	return f[0][0], sid, err == nil
}

// mergeEnv is base with more over it (by name), then extra.
func mergeEnv(base, more []string, extra string) []string {
	out := make([]string, 0, len(base)+len(more)+1)
	set := map[string]int{}
	for _, kv := range append(append(append([]string{}, base...), more...), extra) {
		name, _, _ := strings.Cut(kv, "=")
		if i, ok := set[name]; ok {
			out[i] = kv
			continue
		}
		set[name] = len(out)
		out = append(out, kv)
	}
	return out
}

func envValue(env []string, name string) string {
	v := ""
	for _, kv := range env {
		if k, val, ok := strings.Cut(kv, "="); ok && k == name {
			v = val
		}
	}
	return v
}

// lookPath finds file as the shell would with PATH path; a relative folder of path, and
// a file with a slash, are taken from dir.
func lookPath(file, path, dir string) (string, error) {
	exe := func(p string) bool {
		if !filepath.IsAbs(p) && dir != "" {
			p = filepath.Join(dir, p)
		}
		fi, err := os.Stat(p)
		return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
	}
	if strings.Contains(file, "/") {
		if exe(file) {
			return file, nil
		}
		return "", fmt.Errorf("%s: not found", file)
	}
	for _, d := range filepath.SplitList(path) {
		if d == "" {
			d = "."
		}
		if p := filepath.Join(d, file); exe(p) {
			if !filepath.IsAbs(p) && !strings.HasPrefix(p, ".") {
				p = "./" + p
			}
			return p, nil
		}
	}
	return "", fmt.Errorf("%s: not found in PATH", file)
}

// closeAll closes each of fs once (nil ones are skipped).
func closeAll(fs ...*os.File) {
	for i, f := range fs {
		if f != nil && !slices.Contains(fs[:i], f) {
			_ = f.Close()
		}
	}
}

// inbox holds a command's input between the reader of frames and the writer to the
// command: at most agentproto.StdinWindow bytes not yet acknowledged.
type inbox struct {
	mu     sync.Mutex
	cond   *sync.Cond
	chunks [][]byte
	bytes  int
	closed bool
}

func newInbox() *inbox {
	in := &inbox{}
	in.cond = sync.NewCond(&in.mu)
	return in
}

// put queues a copy of p; more than the window is a protocol violation.
func (in *inbox) put(p []byte) error {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.closed {
		return nil // after StdinEOF, or the command's end: dropped
	}
	if in.bytes+len(p) > agentproto.StdinWindow {
		return fmt.Errorf("%w: input past the window of %d bytes", agentproto.ErrProtocol, agentproto.StdinWindow)
	}
	in.chunks = append(in.chunks, bytes.Clone(p))
	in.bytes += len(p)
	in.cond.Signal()
	return nil
}

func (in *inbox) close() {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.closed = true
	in.cond.Broadcast()
}

// get returns the next chunk, or false once closed and empty.
func (in *inbox) get() ([]byte, bool) {
	in.mu.Lock()
	defer in.mu.Unlock()
	for len(in.chunks) == 0 && !in.closed {
		in.cond.Wait()
	}
	if len(in.chunks) == 0 {
		return nil, false
	}
	p := in.chunks[0]
	in.chunks = in.chunks[1:]
	return p, true
}

// done gives back the window n bytes of input took, once written and acknowledged.
func (in *inbox) done(n int) {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.bytes -= n
}
