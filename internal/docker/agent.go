package docker

// The exec path through the in-sandbox agent (cmd/sandboxd-agent, package agent): one
// channel per sandbox (an attach to the container's stdin and stdout, or with replicas
// an exec of the agent of this process's own, see channel), carrying package
// agentproto's frames, over which every command of the sandbox runs as a stream of its
// own.
//
// Everything that comes from the sandbox is hostile: the agent runs as the sandbox's
// user, and whatever runs there may replace it or write into its output. The frames are
// checked by agentproto (sizes before payloads, every field of every message), output
// past a command's cap is dropped here too, an unknown stream's frames are ignored, and
// a protocol violation closes the channel: the sandbox's commands then run through the
// engine's exec.

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/moby/moby/api/pkg/stdcopy"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/mount"
	"github.com/moby/moby/client"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/sandboxd/sandboxd/internal/agentproto"
	"github.com/sandboxd/sandboxd/internal/execwrap"
	"github.com/sandboxd/sandboxd/internal/lifecycle"
	"github.com/sandboxd/sandboxd/internal/sandbox"
)

// AgentTarget is where the agent's binary is mounted in every sandbox, read-only, and
// run as its main process under the engine's init.
const AgentTarget = "/.sandboxd-agent"

// Timings of the agent's channel.
const (
	agentHelloTimeout = 5 * time.Second       // for the agent's Ready after an attach
	agentRetry        = 5 * time.Second       // before a failed attach is tried again
	agentPing         = 5 * time.Second       // between pings (the agent kills its commands after 30 s without a frame)
	agentDeadAfter    = 4 * agentPing         // without a pong: the channel is closed
	agentWriteTimeout = 10 * time.Second      // for one frame to be taken by the engine
	agentEvents       = 64                    // frames buffered per command before the channel waits
	agentChunk        = agentproto.MaxPayload // input read per frame
	agentExitGrace    = 2 * time.Second       // for ctx to end after the agent reports a timeout
	agentNoAgent      = "no_agent"            // fallback reasons
	agentDown         = "agent_down"
)

// CheckAgent checks that path is an executable regular file, as Config.AgentPath must
// be. The engine mounts it from its own host: sandboxd and the engine must share it.
func CheckAgent(path string) error {
	fi, err := os.Stat(path)
	switch {
	case err != nil:
		return fmt.Errorf("agent %s: %w", path, err)
	case !fi.Mode().IsRegular() || fi.Mode()&0o111 == 0:
		return fmt.Errorf("agent %s: not an executable file", path)
	}
	return nil
}

// withAgent makes the agent cfg's main process, when the runtime has one: the image's
// entrypoint and command replaced by it, stdin kept open for the attach, no TTY (its
// binary is mounted by hostConfig, agentMount).
func (r *Runtime) withAgent(cfg *container.Config) *container.Config {
	if r.agentPath == "" {
		return cfg
	}
	cfg.Entrypoint = []string{AgentTarget}
	cfg.Cmd = nil
	cfg.OpenStdin = true
	cfg.StdinOnce = false
	cfg.Tty = false
	return cfg
}

// withImageCommand gives the agent of cfg, when the runtime has one, the image's own
// entrypoint and command to run (agentproto.CommandVar): the agent as the entrypoint
// leaves the engine running neither. Nothing when the image has neither. The error is
// the engine's.
func (r *Runtime) withImageCommand(ctx context.Context, cfg *container.Config) error {
	if r.agentPath == "" {
		return nil
	}
	img, err := r.cli.ImageInspect(ctx, cfg.Image)
	if err != nil {
		return fmt.Errorf("inspect image %s: %w", cfg.Image, err)
	}
	if img.Config == nil || len(img.Config.Entrypoint)+len(img.Config.Cmd) == 0 {
		return nil
	}
	argv, _ := json.Marshal(append(append([]string{}, img.Config.Entrypoint...), img.Config.Cmd...))
	cfg.Env = append(cfg.Env, agentproto.CommandVar+"="+string(argv))
	return nil
}

// agentMount mounts the agent's binary at AgentTarget, read-only.
func agentMount(agentPath string) mount.Mount {
	return mount.Mount{
		Type:        mount.TypeBind,
		Source:      agentPath,
		Target:      AgentTarget,
		ReadOnly:    true,
		BindOptions: &mount.BindOptions{Propagation: mount.PropagationPrivate, NonRecursive: true},
	}
}

// hasAgent says whether an inspected container runs the agent as its main process.
func hasAgent(c container.InspectResponse) bool {
	return c.Config != nil && c.Config.OpenStdin && !c.Config.Tty &&
		len(c.Config.Entrypoint) == 1 && c.Config.Entrypoint[0] == AgentTarget
}

// agents holds the runtime's channels, one per sandbox.
type agents struct {
	r         *Runtime
	fallbacks metric.Int64Counter
	ping      time.Duration // between pings (agentPing)
	deadAfter time.Duration // without a frame: the channel is closed (agentDeadAfter)
	// firstStream, when not 0, is where a new channel's stream ids start instead of a
	// random place (tests that forge a command's frames need to know its id).
	firstStream uint32

	mu    sync.Mutex
	conns map[string]*agentEntry // by container id
	wg    sync.WaitGroup         // the channels' goroutines
	done  chan struct{}          // closed by close
}

// agentEntry is what is known of one sandbox's agent.
type agentEntry struct {
	conn    *agentConn    // live, once dialled
	dialing chan struct{} // closed when a dial ends
	noAgent bool          // the container does not run one
	retryAt time.Time     // after a failed dial
}

func newAgents(r *Runtime, mp metric.MeterProvider) (*agents, error) {
	fallbacks, err := mp.Meter("github.com/sandboxd/sandboxd/internal/docker").Int64Counter("sandbox.exec.fallback.total",
		metric.WithDescription("commands and terminals run through the engine's exec instead of the in-sandbox agent, by reason (no_agent: the sandbox has none; agent_down: its channel is down)"))
	if err != nil {
		return nil, err
	}
	return &agents{r: r, fallbacks: fallbacks, ping: agentPing, deadAfter: agentDeadAfter,
		conns: map[string]*agentEntry{}, done: make(chan struct{})}, nil
}

// close closes every channel and waits for their goroutines.
func (a *agents) close() {
	a.mu.Lock()
	select {
	case <-a.done:
	default:
		close(a.done)
	}
	var conns []*agentConn
	for _, e := range a.conns {
		if e.conn != nil {
			conns = append(conns, e.conn)
		}
	}
	a.mu.Unlock()
	for _, c := range conns {
		c.fail(errors.New("runtime closed"))
	}
	a.wg.Wait()
}

// forget drops what is known of a container's agent (it was removed).
func (a *agents) forget(containerID string) {
	a.mu.Lock()
	e := a.conns[containerID]
	delete(a.conns, containerID)
	a.mu.Unlock()
	if e != nil && e.conn != nil {
		e.conn.fail(errors.New("sandbox removed"))
	}
}

// get returns the live channel to the agent of containerID, attaching when there is
// none, or the reason there is none (agentNoAgent, agentDown), or an error about the
// container itself (gone, not sandboxd's).
func (a *agents) get(ctx context.Context, containerID string) (*agentConn, string, error) {
	for {
		a.mu.Lock()
		select {
		case <-a.done:
			a.mu.Unlock()
			return nil, agentDown, nil
		default:
		}
		e := a.conns[containerID]
		switch {
		case e == nil:
			e = &agentEntry{dialing: make(chan struct{})}
			a.conns[containerID] = e
			a.mu.Unlock()
			return a.dial(ctx, containerID, e)
		case e.conn != nil && e.conn.alive():
			a.mu.Unlock()
			return e.conn, "", nil
		case e.dialing != nil:
			wait := e.dialing
			a.mu.Unlock()
			select {
			case <-wait:
				continue
			case <-ctx.Done():
				return nil, "", ctx.Err()
			}
		case e.noAgent:
			a.mu.Unlock()
			return nil, agentNoAgent, nil
		case time.Now().Before(e.retryAt):
			a.mu.Unlock()
			return nil, agentDown, nil
		}
		// A channel that closed, or a dial to retry.
		delete(a.conns, containerID)
		a.mu.Unlock()
	}
}

// dial attaches to the container's agent and says Hello.
func (a *agents) dial(ctx context.Context, containerID string, e *agentEntry) (conn *agentConn, reason string, err error) {
	defer func() {
		a.mu.Lock()
		switch {
		case conn != nil:
			e.conn = conn
		case reason == agentNoAgent:
			e.noAgent = true
		case reason != "":
			e.retryAt = time.Now().Add(agentRetry)
		default: // the container's own error: ask again next time
			delete(a.conns, containerID)
		}
		close(e.dialing)
		e.dialing = nil
		a.mu.Unlock()
	}()
	c, err := a.r.ownedContainer(ctx, containerID)
	if err != nil {
		return nil, "", err
	}
	if c.State == nil || !c.State.Running {
		return nil, "", fmt.Errorf("docker: exec in %s: not running: %w", containerID, sandbox.ErrNotFound)
	}
	if !hasAgent(c) {
		return nil, agentNoAgent, nil
	}
	// The attach lives as long as the sandbox, not as the request that made it; its
	// context bounds the handshake only (the client ties no connection to it), so a hung
	// engine holds no command past agentHelloTimeout.
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), agentHelloTimeout)
	att, err := a.channel(actx, c)
	cancel()
	if err != nil {
		a.r.log.WarnContext(ctx, "agent_attach_failed", "container_id", containerID, "error", err.Error())
		return nil, agentDown, nil
	}
	conn = &agentConn{
		a: a, containerID: containerID, workdir: c.Config.WorkingDir, att: att,
		streams: map[uint32]*agentStream{}, closed: make(chan struct{}), ready: make(chan struct{}),
		nonce: rand.Uint64(), next: rand.Uint32(), // ids of another host's streams are unlikely to meet these
	}
	if a.firstStream != 0 {
		conn.next = a.firstStream
	}
	conn.lastPong.Store(time.Now().UnixNano())
	a.wg.Go(conn.read)
	if err := conn.write(agentproto.Hello, 0, agentproto.HelloPayload(conn.nonce)); err != nil {
		return nil, agentDown, nil
	}
	t := time.NewTimer(agentHelloTimeout)
	defer t.Stop()
	select {
	case <-conn.ready:
	case <-conn.closed:
		a.r.log.WarnContext(ctx, "agent_unreachable", "container_id", containerID, "error", conn.err.Error())
		return nil, agentDown, nil
	case <-t.C:
		conn.fail(errors.New("no ready from the agent"))
		a.r.log.WarnContext(ctx, "agent_unreachable", "container_id", containerID, "error", "no answer to hello")
		return nil, agentDown, nil
	case <-ctx.Done():
		conn.fail(ctx.Err())
		return nil, "", ctx.Err()
	}
	a.wg.Go(conn.ping)
	return conn, "", nil
}

// channel opens the byte channel to c's agent: an attach to the container's stdin and
// stdout (its main process), or, when other processes share the sandboxes, an agent of
// this process's own started through the engine's exec as the sandbox's user.
//
// Why not one attach per replica: the engine copies each attach's input into the
// container's one stdin pipe as it reads it from that attach's connection (moby's
// container/stream CopyStreams: a 32 KiB pools.Copy per attach), so a frame split
// across two reads of one connection may have another's bytes between its parts; and
// the agent takes any Hello as a new host, killing what the other started. An exec has
// a stdin of its own, which ends when its connection does (CloseStdin), and with it the
// exec's agent and its commands.
func (a *agents) channel(ctx context.Context, c container.InspectResponse) (client.HijackedResponse, error) {
	if !a.r.agentExec {
		att, err := a.r.cli.ContainerAttach(ctx, c.ID, client.ContainerAttachOptions{Stream: true, Stdin: true, Stdout: true})
		return att.HijackedResponse, err
	}
	created, err := a.r.cli.ExecCreate(ctx, c.ID, client.ExecCreateOptions{
		User: c.Config.User, WorkingDir: c.Config.WorkingDir,
		AttachStdin: true, AttachStdout: true,
		Cmd: []string{AgentTarget, agentproto.ChannelArg},
	})
	if err != nil {
		return client.HijackedResponse{}, err
	}
	att, err := a.r.cli.ExecAttach(ctx, created.ID, client.ExecAttachOptions{})
	return att.HijackedResponse, err
}

// agentConn is the channel to one sandbox's agent.
type agentConn struct {
	a           *agents
	containerID string
	workdir     string // the container's working folder
	att         client.HijackedResponse
	nonce       uint64

	wmu sync.Mutex // one frame at a time
	wb  []byte

	mu      sync.Mutex
	streams map[uint32]*agentStream
	next    uint32

	ready    chan struct{} // closed at the agent's Ready
	closed   chan struct{} // closed by fail
	failOnce sync.Once
	err      error        // why it closed, set before closed is
	lastPong atomic.Int64 // unix nanoseconds of the agent's last frame
	waiting  atomic.Bool  // the reader waits for a command's Exec to take a frame
}

// agentStream is one command on the channel, as the reader delivers it.
type agentStream struct {
	events   chan agentEvent
	gone     chan struct{} // closed when its Exec stops listening
	limit    int64         // output accepted: at most limit bytes (0: no cap); the reader's
	received int64         // output accepted so far; the reader's
	ended    bool          // Exit or Failed delivered; the reader's
	acked    atomic.Int64  // input acknowledged
	ack      chan struct{} // a token when more was acknowledged
}

// agentEvent is a frame of a command, checked.
type agentEvent struct {
	t      agentproto.Type
	data   []byte // output
	exit   agentproto.ExitMsg
	reason byte // Failed, FileError
	msg    string
	stat   agentproto.FileStat   // FileInfo
	list   []agentproto.FileStat // FileList
}

func (c *agentConn) alive() bool {
	select {
	case <-c.closed:
		return false
	default:
		return true
	}
}

// fail closes the channel for err; every command on it sees it closed, and the next
// command of the sandbox attaches anew (or finds the sandbox gone).
func (c *agentConn) fail(err error) {
	c.failOnce.Do(func() {
		c.err = err
		close(c.closed)
		c.att.Close()
		c.a.mu.Lock()
		if e := c.a.conns[c.containerID]; e != nil && e.conn == c {
			delete(c.a.conns, c.containerID)
		}
		c.a.mu.Unlock()
	})
}

// write sends one frame; a frame the engine does not take in agentWriteTimeout closes
// the channel (an agent that stopped reading).
func (c *agentConn) write(t agentproto.Type, stream uint32, p []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if !c.alive() {
		return fmt.Errorf("agent channel closed: %w", c.err)
	}
	c.wb = agentproto.AppendFrame(c.wb[:0], t, stream, p)
	_ = c.att.Conn.SetWriteDeadline(time.Now().Add(agentWriteTimeout))
	if _, err := c.att.Conn.Write(c.wb); err != nil {
		c.fail(fmt.Errorf("write: %w", err))
		return err
	}
	return nil
}

// read is the channel's reader: it takes the engine's multiplexed stream apart, checks
// each frame and hands it to its command.
func (c *agentConn) read() {
	err := c.readFrames(agentproto.NewReader(&stdoutOf{r: c.att.Reader}))
	c.fail(err)
}

// stdoutOf reads the stdout of the engine's multiplexed stream (an attach without a
// TTY: a header of 8 bytes, the stream's number and the size of what follows, before
// each piece), in the reader's own goroutine: no copy through a pipe, no hop to another
// goroutine per frame. The agent writes nothing on stderr that matters: it is dropped.
type stdoutOf struct {
	r    io.Reader
	left int // of the current stdout piece
	hdr  [8]byte
}

func (s *stdoutOf) Read(p []byte) (int, error) {
	for s.left == 0 {
		if _, err := io.ReadFull(s.r, s.hdr[:]); err != nil {
			if err == io.ErrUnexpectedEOF {
				return 0, fmt.Errorf("the engine's stream ended inside a header: %w", err)
			}
			return 0, err
		}
		n := int(binary.BigEndian.Uint32(s.hdr[4:]))
		switch s.hdr[0] {
		case byte(stdcopy.Stdin), byte(stdcopy.Stdout): // "stdin" is stdout too (StdCopy)
			s.left = n
		case byte(stdcopy.Stderr):
			if _, err := io.CopyN(io.Discard, s.r, int64(n)); err != nil {
				return 0, err
			}
		case byte(stdcopy.Systemerr):
			msg := make([]byte, min(n, 1024))
			_, _ = io.ReadFull(s.r, msg)
			return 0, fmt.Errorf("the engine's stream failed: %q", msg)
		default:
			return 0, fmt.Errorf("the engine's stream: unknown stream %d", s.hdr[0])
		}
	}
	n, err := s.r.Read(p[:min(len(p), s.left)])
	s.left -= n
	if err == io.EOF && s.left > 0 {
		err = io.ErrUnexpectedEOF
	}
	return n, err
}

func (c *agentConn) readFrames(fr *agentproto.Reader) error {
	ready := false
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			return fmt.Errorf("read: %w", err)
		}
		c.lastPong.Store(time.Now().UnixNano()) // any frame says the agent lives
		switch f.Type {
		case agentproto.Ready:
			nonce, err := agentproto.ParseHello(f.Payload)
			if err != nil {
				return err
			}
			if !ready && nonce == c.nonce {
				ready = true
				close(c.ready)
			}
			continue
		case agentproto.Pong:
			continue
		case agentproto.Started, agentproto.Failed, agentproto.Stdout, agentproto.Stderr, agentproto.Ack, agentproto.Exit:
		case agentproto.FileInfo, agentproto.FileList, agentproto.FileDone, agentproto.FileError:
		default:
			return fmt.Errorf("%w: %s frame from the agent", agentproto.ErrProtocol, f.Type)
		}
		// Every frame is checked, whoever it is for.
		ev := agentEvent{t: f.Type}
		var acked uint32
		switch f.Type {
		case agentproto.Ack:
			acked, err = agentproto.ParseAck(f.Payload)
		case agentproto.Failed:
			ev.reason, ev.msg, err = agentproto.ParseFailed(f.Payload)
		case agentproto.Exit:
			ev.exit, err = agentproto.ParseExit(f.Payload)
		case agentproto.FileInfo, agentproto.FileList, agentproto.FileError:
			err = ev.parseFile(f)
		}
		if err != nil {
			return err
		}
		if !ready {
			continue // what the agent said to a previous host
		}
		c.mu.Lock()
		st := c.streams[f.Stream]
		c.mu.Unlock()
		if st == nil || st.ended {
			continue // a command whose Exec has returned
		}
		switch f.Type {
		case agentproto.Ack:
			st.acked.Add(int64(acked))
			select {
			case st.ack <- struct{}{}:
			default:
			}
			continue
		case agentproto.Stdout, agentproto.Stderr:
			p := f.Payload
			if st.limit > 0 {
				p = p[:min(int64(len(p)), max(st.limit-st.received, 0))]
				st.received += int64(len(p))
			}
			if len(p) == 0 {
				continue
			}
			ev.data = append([]byte(nil), p...)
		case agentproto.Failed, agentproto.Exit, agentproto.FileDone, agentproto.FileError:
			st.ended = true
		}
		// The command's Exec takes its frames in order; a slow one holds the channel
		// (its output is what the agent waits to write), one that left drops them.
		select {
		case st.events <- ev:
			continue
		default:
		}
		c.waiting.Store(true)
		select {
		case st.events <- ev:
		case <-st.gone:
		case <-c.closed:
			return c.err
		}
		c.waiting.Store(false)
		c.lastPong.Store(time.Now().UnixNano()) // the pongs that came meanwhile are still unread
	}
}

// ping keeps the agent's watchdog fed and closes a channel whose agent stopped
// answering.
func (c *agentConn) ping() {
	t := time.NewTicker(c.a.ping)
	defer t.Stop()
	for {
		select {
		case <-c.closed:
			return
		case <-t.C:
			// A reader held by a slow consumer reads no pong meanwhile: the agent is
			// not the one that stopped.
			if !c.waiting.Load() && time.Since(time.Unix(0, c.lastPong.Load())) > c.a.deadAfter {
				c.fail(errors.New("the agent stopped answering pings"))
				return
			}
			_ = c.write(agentproto.Ping, 0, make([]byte, 8))
		}
	}
}

// open registers a new command's stream.
func (c *agentConn) open(limit int64) (uint32, *agentStream) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.next++
	for c.next == 0 || c.streams[c.next] != nil {
		c.next++
	}
	st := &agentStream{events: make(chan agentEvent, agentEvents), gone: make(chan struct{}), limit: limit, ack: make(chan struct{}, 1)}
	c.streams[c.next] = st
	return c.next, st
}

func (c *agentConn) closeStream(id uint32, st *agentStream) {
	c.mu.Lock()
	delete(c.streams, id)
	c.mu.Unlock()
	close(st.gone)
}

// errAgentNotStarted says a command was never handed to the agent: the engine's exec may
// run it instead.
var errAgentNotStarted = errors.New("the agent's channel closed before the command was sent")

// exec runs cmd through the agent, with the semantics of Runtime.Exec. Its error is
// errAgentNotStarted when nothing was sent.
func (c *agentConn) exec(ctx context.Context, cmd lifecycle.ExecCommand, env []string) (int, error) {
	limit := int64(0)
	if cmd.OutputCap > 0 {
		limit = cmd.OutputCap + 1
	}
	id, st := c.open(limit)
	defer c.closeStream(id, st)
	msg := agentproto.StartMsg{
		Argv: cmd.Cmd, Env: env, Dir: execwrap.Workdir(c.workdir, cmd.Workdir),
		OutputCap: cmd.OutputCap, Stdin: cmd.Stdin != nil,
	}
	if d, ok := ctx.Deadline(); ok {
		msg.TimeoutMS = max(time.Until(d).Milliseconds(), 1)
	}
	p, err := json.Marshal(msg)
	if err != nil || len(p) > agentproto.MaxPayload {
		return -1, fmt.Errorf("docker: exec in %s: command of %d bytes, over %d: %w", c.containerID, len(p), agentproto.MaxPayload, sandbox.ErrInvalid)
	}
	if err := c.write(agentproto.Start, id, p); err != nil {
		return -1, errAgentNotStarted
	}
	var stdin sync.WaitGroup
	defer stdin.Wait()
	stopIn := make(chan struct{})
	defer close(stopIn)
	return c.await(ctx, id, st, agentRun{
		op: "exec", what: "command", stdout: cmd.Stdout, stderr: cmd.Stderr, timed: true,
		started: func() {
			if cmd.Stdin != nil {
				stdin.Go(func() { c.feedStdin(id, st, cmd.Stdin, stopIn) })
			}
		},
	})
}

// agentRun is what sets a command apart from a terminal while await takes its stream's
// frames.
type agentRun struct {
	op, what       string    // the words of its errors: "exec", "command"; "terminal", "shell"
	stdout, stderr io.Writer // where its output goes (nil: discarded)
	started        func()    // called on the first Started frame (the agent is the sandbox's: a forged second one is ignored)
	// timed: the agent was told the caller's deadline, so its TimedOut waits a moment
	// for ctx to end.
	timed bool
}

// await takes the frames of the stream id, which the agent has been asked to run, until
// it ends: with its exit code, or the error of its start, of its output, of ctx, or of
// the channel. When ctx ends, or the output cannot be delivered, it sends Cancel and
// waits execwrap.KillTimeout at most for the agent's Exit.
func (c *agentConn) await(ctx context.Context, id uint32, st *agentStream, r agentRun) (int, error) {
	var (
		outErr   error
		started  bool
		canceled bool
		killBy   <-chan time.Time
		done     = ctx.Done()
	)
	cancel := func() {
		if !canceled {
			canceled = true
			// Sent aside: the reader may be waiting for this loop to take a frame.
			go func() { _ = c.write(agentproto.Cancel, id, nil) }()
			killBy = time.After(execwrap.KillTimeout)
		}
	}
	for {
		select {
		case ev := <-st.events:
			switch ev.t {
			case agentproto.Started:
				if !started {
					started = true
					r.started()
				}
			case agentproto.Stdout, agentproto.Stderr:
				w := r.stdout
				if ev.t == agentproto.Stderr {
					w = r.stderr
				}
				if outErr == nil {
					if _, err := execwrap.OrDiscard(w).Write(ev.data); err != nil {
						outErr = fmt.Errorf("docker: %s in %s: output: %w", r.op, c.containerID, err)
						cancel()
					}
				}
			case agentproto.Failed:
				return -1, agentFailure(r.op, c.containerID, ev.reason, ev.msg)
			case agentproto.Exit:
				switch {
				case outErr != nil:
					return -1, outErr
				case ctx.Err() != nil:
					return -1, ctx.Err()
				case ev.exit.TimedOut && r.timed:
					// The agent's clock ran out just before ctx's: the caller's
					// deadline is what the result reports.
					select {
					case <-done:
						return -1, ctx.Err()
					case <-time.After(agentExitGrace):
					}
				case ev.exit.Canceled:
					return -1, fmt.Errorf("docker: %s in %s: the agent killed the %s (it lost its host): %w", r.op, c.containerID, r.what, sandbox.ErrUnavailable)
				}
				return int(ev.exit.Code), nil
			}
		case <-done:
			done = nil
			cancel()
		case <-killBy:
			err := fmt.Errorf("docker: %s in %s: the agent did not report the %s killed after %s: %w", r.op, c.containerID, r.what, execwrap.KillTimeout, sandbox.ErrUnavailable)
			return -1, errors.Join(ctx.Err(), outErr, err)
		case <-c.closed:
			err := fmt.Errorf("docker: %s in %s: the agent's channel closed: %w: %w", r.op, c.containerID, sandbox.ErrUnavailable, c.err)
			if !c.a.r.running(c.containerID) {
				err = fmt.Errorf("docker: %s in %s: the sandbox stopped: %w", r.op, c.containerID, sandbox.ErrNotFound)
			}
			return -1, errors.Join(ctx.Err(), outErr, err)
		}
	}
}

// feed sends r to the stream id as its input, keeping at most agentproto.StdinWindow
// bytes unacknowledged, then StdinEOF at r's end. It returns the error of a read of r
// that failed, having sent nothing after what that read gave; nil at r's end, or once
// stop or the channel closes or a write fails.
func (c *agentConn) feed(id uint32, st *agentStream, r io.Reader, stop <-chan struct{}) error {
	buf := make([]byte, agentChunk)
	var sent int64
	for {
		n, err := r.Read(buf)
		for n > 0 && sent+int64(n)-st.acked.Load() > agentproto.StdinWindow {
			select {
			case <-st.ack:
			case <-stop:
				return nil
			case <-c.closed:
				return nil
			}
		}
		if n > 0 {
			if c.write(agentproto.Stdin, id, buf[:n]) != nil {
				return nil
			}
			sent += int64(n)
		}
		switch {
		case err == io.EOF:
			_ = c.write(agentproto.StdinEOF, id, nil)
			return nil
		case err != nil:
			return err
		}
		select {
		case <-stop:
			return nil
		default:
		}
	}
}

// feedStdin feeds r to a command or a terminal (see feed): a read of r that fails ends
// its input as r's end does.
func (c *agentConn) feedStdin(id uint32, st *agentStream, r io.Reader, stop <-chan struct{}) {
	if c.feed(id, st, r, stop) != nil {
		_ = c.write(agentproto.StdinEOF, id, nil)
	}
}

// agentFailure is the error of a command or a terminal the agent could not start; op
// names the operation in its words ("exec", "terminal", as agentRun.op).
func agentFailure(op, containerID string, reason byte, msg string) error {
	switch reason {
	case agentproto.ReasonNotFound:
		return fmt.Errorf("docker: %s in %s: command not found: %s: %w", op, containerID, msg, sandbox.ErrInvalid)
	case agentproto.ReasonWorkdir:
		return fmt.Errorf("docker: %s in %s: cannot start: %s: %w", op, containerID, msg, sandbox.ErrInvalid)
	case agentproto.ReasonBusy:
		return fmt.Errorf("docker: %s in %s: %s: %w", op, containerID, msg, sandbox.ErrBusy)
	}
	return fmt.Errorf("docker: %s in %s: cannot start: %s: %w", op, containerID, msg, sandbox.ErrUnavailable)
}

// running says whether the container still runs, as far as the engine can tell.
func (r *Runtime) running(containerID string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	res, err := r.cli.ContainerInspect(ctx, containerID, client.ContainerInspectOptions{})
	return err != nil && !errors.Is(engineError("", err), sandbox.ErrNotFound) ||
		err == nil && res.Container.State != nil && res.Container.State.Running
}

// countFallback counts a command run through the engine's exec although the runtime has
// an agent.
func (a *agents) countFallback(ctx context.Context, reason string) {
	a.fallbacks.Add(ctx, 1, metric.WithAttributes(attribute.String("reason", reason)))
}
