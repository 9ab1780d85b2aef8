package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/sandboxd/sandboxd/internal/sandbox"
)

// ExecRequest asks to run a command in the chat's live sandbox.
type ExecRequest struct {
	ChatID  uuid.UUID
	Cmd     []string
	Env     map[string]string
	Workdir string
	Stdin   io.Reader
	Timeout time.Duration // <= 0: the configured default
	Stdout  io.Writer     // receives stdout as it comes (nil: discarded)
	Stderr  io.Writer     // receives stderr as it comes (nil: discarded)
}

// ExecResult is how a command ended.
type ExecResult struct {
	ExitCode  int // -1 when the command was killed for its timeout
	TimedOut  bool
	Truncated bool // output past the configured cap was dropped
	Duration  time.Duration
}

// Exec outcomes, as metric and span results.
const (
	execCompleted Outcome = "completed"
	execTimedOut  Outcome = "timed_out"
	execCanceled  Outcome = "canceled"
	execBusy      Outcome = "busy"
	execLimited   Outcome = "limit_exceeded"
)

// slots counts what runs per key (a session, a tenant), up to max each (or the max
// given to takeUpTo).
type slots[K comparable] struct {
	mu    sync.Mutex
	max   int
	taken map[K]int
}

// take reserves one of the key's slots; false when all are taken.
func (s *slots[K]) take(key K) bool { return s.takeUpTo(key, s.max) }

func (s *slots[K]) takeUpTo(key K, max int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.taken[key] >= max {
		return false
	}
	s.taken[key]++
	return true
}

func (s *slots[K]) give(key K) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.taken[key]--; s.taken[key] <= 0 {
		delete(s.taken, key)
	}
}

// Exec runs a command in the chat's live sandbox and waits for it. Output beyond the
// configured cap is dropped and flagged; at the timeout the command is killed in the
// sandbox and the result says TimedOut (no error). A caller that goes away (ctx ends)
// kills its command too. Errors: sandbox.ErrInvalid (empty command, timeout over the
// maximum), sandbox.ErrNotFound (no sandbox), sandbox.ErrExpired (its TTL passed),
// sandbox.ErrBusy (the sandbox runs ExecMaxConcurrent commands already),
// sandbox.ErrLimit (its tenant runs its MaxExecConcurrent commands already),
// sandbox.ErrUnavailable (no executor), or the runtime's error.
func (s *Service) Exec(ctx context.Context, req ExecRequest) (ExecResult, error) {
	tenant := sandbox.TenantFrom(ctx)
	ctx, span := s.tracer.Start(ctx, "usecase.exec_sandbox",
		trace.WithAttributes(attribute.String("chat.id", req.ChatID.String()), tenantAttr(tenant)))
	defer span.End()

	res, outcome, err := s.exec(ctx, span, req)
	s.m.execTotal.Add(ctx, 1, metric.WithAttributes(result(string(outcome)), s.tenantMetric(tenant)))
	span.SetAttributes(attribute.String("sandbox.result", string(outcome)))
	if err != nil {
		failSpan(span, err)
		return ExecResult{}, err
	}
	s.m.execDuration.Record(ctx, res.Duration.Seconds(), metric.WithAttributes(result(string(outcome))))
	span.SetAttributes(attribute.Int("process.exit.code", res.ExitCode))
	return res, nil
}

func (s *Service) exec(ctx context.Context, span trace.Span, req ExecRequest) (ExecResult, Outcome, error) {
	if s.executor == nil {
		return ExecResult{}, Failed, fmt.Errorf("exec: no executor configured: %w", sandbox.ErrUnavailable)
	}
	if len(req.Cmd) == 0 || req.Cmd[0] == "" {
		return ExecResult{}, Failed, fmt.Errorf("exec: empty command: %w", sandbox.ErrInvalid)
	}
	timeout := req.Timeout
	if timeout <= 0 {
		timeout = s.execDefaultTimeout
	}
	if timeout > s.execMaxTimeout {
		return ExecResult{}, Failed, fmt.Errorf("exec: timeout %s is over the maximum %s: %w", timeout, s.execMaxTimeout, sandbox.ErrInvalid)
	}
	session, err := s.liveSession(ctx, req.ChatID)
	if err != nil {
		return ExecResult{}, Failed, fmt.Errorf("exec: %w", err)
	}
	release, outcome, err := s.takeExecSlot(session)
	if err != nil {
		return ExecResult{}, outcome, fmt.Errorf("exec: %w", err)
	}
	defer release()
	span.SetAttributes(
		attribute.String("session.id", session.ID.String()),
		attribute.String("container.id", session.ContainerID))
	s.touch(ctx, session)

	budget := &outputCap{left: s.execOutputCap}
	ectx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	start := s.clock.Now()
	code, err := s.executor.Exec(ectx, session.ContainerID, ExecCommand{
		Cmd: req.Cmd, Env: req.Env, Workdir: req.Workdir, Stdin: req.Stdin,
		Stdout: budget.writer(req.Stdout), Stderr: budget.writer(req.Stderr),
		OutputCap: s.execOutputCap,
	})
	res := ExecResult{ExitCode: code, Duration: s.clock.Now().Sub(start), Truncated: budget.truncated()}
	defer func() { s.event(session, EventExec, execSummary(req.Cmd, res, ctx.Err(), err)) }()
	switch {
	case ctx.Err() != nil:
		return ExecResult{}, execCanceled, fmt.Errorf("exec: caller gone: %w", ctx.Err())
	case errors.Is(ectx.Err(), context.DeadlineExceeded):
		res.ExitCode, res.TimedOut = -1, true
		s.log.InfoContext(ctx, "sandbox_exec_timed_out",
			append(logAttrs(session), slog.Duration("timeout", timeout))...)
		return res, execTimedOut, nil
	case err != nil:
		return ExecResult{}, Failed, fmt.Errorf("exec in %s: %w", session.ContainerID, err)
	}
	return res, execCompleted, nil
}

// execSummary says how a command ended, and which: "exit 0 in 12ms: ls -l".
func execSummary(cmd []string, res ExecResult, callerGone, err error) string {
	how := fmt.Sprintf("exit %d in %s", res.ExitCode, res.Duration.Round(time.Millisecond))
	switch {
	case callerGone != nil:
		how = "caller gone"
	case res.TimedOut:
		how = "timed out after " + res.Duration.Round(time.Millisecond).String()
	case err != nil:
		how = "failed: " + sandbox.ErrorType(err)
	}
	return how + ": " + strings.Join(cmd, " ")
}

// takeExecSlot reserves one of the commands the session's sandboxes and its tenant may
// run at once (a terminal is one), or says which bound refused it.
func (s *Service) takeExecSlot(session sandbox.Session) (release func(), _ Outcome, _ error) {
	// By session: commands still running in a sandbox that was replaced do not count
	// against its successor.
	if !s.execSlots.take(session.ID) {
		return nil, execBusy, fmt.Errorf("sandbox %s of chat %s runs %d commands already, the most it may at once: %w",
			session.ContainerID, session.ChatID, s.execSlots.max, sandbox.ErrBusy)
	}
	tenant := session.TenantOf()
	if max := s.tenants[tenant].MaxExecConcurrent; max > 0 {
		if !s.tenantExec.takeUpTo(tenant, max) {
			s.execSlots.give(session.ID)
			return nil, execLimited, fmt.Errorf("tenant %s runs %d commands already, the most it may at once: %w",
				tenant, max, sandbox.ErrLimit)
		}
		return func() { s.tenantExec.give(tenant); s.execSlots.give(session.ID) }, "", nil
	}
	return func() { s.execSlots.give(session.ID) }, "", nil
}

// outputCap drops output past a shared budget of bytes and remembers that it did.
type outputCap struct {
	mu   sync.Mutex
	left int64
	cut  bool
}

func (c *outputCap) writer(w io.Writer) io.Writer {
	if w == nil {
		w = io.Discard
	}
	return capWriter{c, w}
}

func (c *outputCap) truncated() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cut
}

type capWriter struct {
	c *outputCap
	w io.Writer
}

// Write passes on what the budget allows and reports the whole of p written, so the
// command is never blocked or failed by the cap.
func (cw capWriter) Write(p []byte) (int, error) {
	cw.c.mu.Lock()
	defer cw.c.mu.Unlock()
	n := int64(len(p))
	if n > cw.c.left {
		n, cw.c.cut = cw.c.left, true
	}
	cw.c.left -= n
	if n > 0 {
		if _, err := cw.w.Write(p[:n]); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}
