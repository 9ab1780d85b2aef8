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
		return s.start(f.Stream, m)
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

func (s *server) start(id uint32, m agentproto.StartMsg) error {
	s.mu.Lock()
	if _, dup := s.streams[id]; dup {
		s.mu.Unlock()
		return fmt.Errorf("%w: stream %d started twice", agentproto.ErrProtocol, id)
	}
	st := &stream{id: id, token: rand.Text(), killed: make(chan struct{}), cap: m.OutputCap}
	if m.Stdin {
		st.in = newInbox()
	}
	busy := len(s.streams) >= s.cfg.MaxStreams
	if !busy {
		s.streams[id] = st
	}
	s.mu.Unlock()
	if busy {
		return s.send(nil, agentproto.Failed, id, agentproto.FailedPayload(agentproto.ReasonBusy,
			fmt.Sprintf("the agent runs %d commands already", s.cfg.MaxStreams)))
	}
	p, err := s.launch(st, m)
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
	if m.Stdin {
		if err := s.send(st, agentproto.Started, id, nil); err != nil {
			return err
		}
	}
	s.wg.Go(func() { s.run(st, m, p) })
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

// proc is a started command and the agent's ends of its pipes.
type proc struct {
	cmd       *exec.Cmd
	out, errs *os.File
	in        *os.File // nil without input
}

// launch starts st's command. It runs in the reader's loop, so that every later frame of
// the stream (a Cancel) finds it started.
func (s *server) launch(st *stream, m agentproto.StartMsg) (*proc, error) {
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
	var all []*os.File
	pipe := func() (r, w *os.File) {
		if err == nil {
			if r, w, err = os.Pipe(); err == nil {
				all = append(all, r, w)
			}
		}
		return r, w
	}
	outR, outW := pipe()
	errR, errW := pipe()
	var inR, inW *os.File
	if st.in != nil {
		inR, inW = pipe()
	}
	if err != nil {
		closeAll(all...)
		return nil, &startError{agentproto.ReasonStart, err.Error()}
	}
	cmd := &exec.Cmd{
		Path: path, Args: m.Argv, Env: env, Dir: m.Dir,
		Stdout: outW, Stderr: errW,
		SysProcAttr: &syscall.SysProcAttr{Setsid: true},
	}
	if inR != nil {
		cmd.Stdin = inR
	}
	s.procMu.Lock()
	err = cmd.Start()
	if err == nil {
		st.pid = cmd.Process.Pid
	}
	s.procMu.Unlock()
	closeAll(outW, errW, inR) // the child holds its own
	if err != nil {
		closeAll(outR, errR, inW)
		return nil, &startError{agentproto.ReasonStart, err.Error()}
	}
	return &proc{cmd: cmd, out: outR, errs: errR, in: inW}, nil
}

// run waits for st's command to end, forwarding its output and input meanwhile, and
// reports its end.
func (s *server) run(st *stream, m agentproto.StartMsg, p *proc) {
	defer s.forget(st)
	var timer *time.Timer
	if m.TimeoutMS > 0 {
		timer = time.AfterFunc(time.Duration(m.TimeoutMS)*time.Millisecond, func() {
			st.timedOut.Store(true)
			s.kill(st)
		})
	}
	var outs sync.WaitGroup
	outs.Go(func() { s.forward(st, agentproto.Stdout, p.out) })
	outs.Go(func() { s.forward(st, agentproto.Stderr, p.errs) })
	if p.in != nil {
		s.wg.Go(func() { s.feed(st, p.in) })
	}
	waitErr := p.cmd.Wait()
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
			closeAll(p.out, p.errs)
			<-ended
		}
	}
	if timer != nil {
		timer.Stop()
	}
	if st.in != nil {
		st.in.close() // input that comes now is dropped
	}
	msg := agentproto.ExitMsg{TimedOut: st.timedOut.Load(), Canceled: st.canceled.Load(), Truncated: st.truncated.Load()}
	var exitErr *exec.ExitError
	switch {
	case waitErr == nil:
	case errors.As(waitErr, &exitErr):
		ws, _ := exitErr.Sys().(syscall.WaitStatus)
		if ws.Signaled() {
			msg.Signal = uint8(ws.Signal())
			msg.Code = 128 + int32(ws.Signal())
		} else {
			msg.Code = int32(ws.ExitStatus())
		}
	default:
		msg.Code = 255
	}
	if msg.Code < 0 || msg.Code > 255 {
		msg.Code = 255
	}
	closeAll(p.out, p.errs)
	_ = s.send(st, agentproto.Exit, st.id, msg.Payload())
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

// feed writes the host's input to the command, acknowledging each chunk once written
// (or dropped: a command that closed its input loses the rest), and closes its input
// at the host's StdinEOF.
func (s *server) feed(st *stream, w *os.File) {
	defer w.Close()
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

func closeAll(fs ...*os.File) {
	for _, f := range fs {
		if f != nil {
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
