package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/google/uuid"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/sandboxd/sandboxd/internal/sandbox"
)

// What agents do inside their sandbox: run commands, move files, keep it alive.

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
)

// slots counts what runs per session, up to max each.
type slots struct {
	mu    sync.Mutex
	max   int
	taken map[uuid.UUID]int
}

// take reserves one of the session's slots; false when all are taken.
func (s *slots) take(session uuid.UUID) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.taken[session] >= s.max {
		return false
	}
	s.taken[session]++
	return true
}

func (s *slots) give(session uuid.UUID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.taken[session]--; s.taken[session] <= 0 {
		delete(s.taken, session)
	}
}

// Exec runs a command in the chat's live sandbox and waits for it. Output beyond the
// configured cap is dropped and flagged; at the timeout the command is killed in the
// sandbox and the result says TimedOut (no error). A caller that goes away (ctx ends)
// kills its command too. Errors: sandbox.ErrInvalid (empty command, timeout over the
// maximum), sandbox.ErrNotFound (no sandbox), sandbox.ErrExpired (its TTL passed),
// sandbox.ErrBusy (the sandbox runs ExecMaxConcurrent commands already),
// sandbox.ErrUnavailable (no executor), or the runtime's error.
func (s *Service) Exec(ctx context.Context, req ExecRequest) (ExecResult, error) {
	ctx, span := s.tracer.Start(ctx, "usecase.exec_sandbox",
		trace.WithAttributes(attribute.String("chat.id", req.ChatID.String())))
	defer span.End()

	res, outcome, err := s.exec(ctx, span, req)
	s.m.execTotal.Add(ctx, 1, metric.WithAttributes(result(string(outcome))))
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
	// By session: commands still running in a sandbox that was replaced do not count
	// against its successor.
	if !s.execSlots.take(session.ID) {
		return ExecResult{}, execBusy, fmt.Errorf("exec: sandbox %s of chat %s runs %d commands already, the most it may at once: %w",
			session.ContainerID, req.ChatID, s.execSlots.max, sandbox.ErrBusy)
	}
	defer s.execSlots.give(session.ID)
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
	})
	res := ExecResult{ExitCode: code, Duration: s.clock.Now().Sub(start), Truncated: budget.truncated()}
	switch {
	case ctx.Err() != nil:
		return ExecResult{}, execCanceled, fmt.Errorf("exec: caller gone: %w", ctx.Err())
	case errors.Is(ectx.Err(), context.DeadlineExceeded):
		res.ExitCode, res.TimedOut = -1, true
		s.log.InfoContext(ctx, "sandbox_exec_timed_out",
			append(sessionAttrs(session.ChatID, session.ID, session.ContainerID), slog.Duration("timeout", timeout))...)
		return res, execTimedOut, nil
	case err != nil:
		return ExecResult{}, Failed, fmt.Errorf("exec in %s: %w", session.ContainerID, err)
	}
	return res, execCompleted, nil
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

// Keepalive sets the chat's sandbox to expire ttl from now, but never later than the
// configured maximum lifetime after its creation. Errors: sandbox.ErrInvalid (ttl <= 0),
// sandbox.ErrNotFound, sandbox.ErrExpired (an expired sandbox is not revived: create
// replaces it).
func (s *Service) Keepalive(ctx context.Context, chatID uuid.UUID, ttl time.Duration) (sandbox.Session, error) {
	ctx, span := s.tracer.Start(ctx, "usecase.keepalive_sandbox",
		trace.WithAttributes(attribute.String("chat.id", chatID.String())))
	defer span.End()

	var session sandbox.Session
	err := func() error {
		if ttl <= 0 {
			return fmt.Errorf("keepalive: ttl %s is not positive: %w", ttl, sandbox.ErrInvalid)
		}
		return s.locked(ctx, chatID, func(ctx context.Context) error {
			var err error
			session, err = s.extend(ctx, chatID, ttl)
			return err
		})
	}()
	outcome := "extended"
	if err != nil {
		outcome = string(Failed)
	}
	s.m.keepaliveTotal.Add(ctx, 1, metric.WithAttributes(result(outcome)))
	span.SetAttributes(attribute.String("sandbox.result", outcome))
	if err != nil {
		failSpan(span, err)
		return sandbox.Session{}, err
	}
	span.SetAttributes(
		attribute.String("session.id", session.ID.String()),
		attribute.String("container.id", session.ContainerID))
	return session, nil
}

// extend moves the live session's expiry to now+ttl, capped by the maximum lifetime.
// The caller holds the chat's lock.
func (s *Service) extend(ctx context.Context, chatID uuid.UUID, ttl time.Duration) (sandbox.Session, error) {
	session, err := s.liveSession(ctx, chatID)
	if err != nil {
		return sandbox.Session{}, fmt.Errorf("keepalive: %w", err)
	}
	expires := s.clock.Now().Add(ttl)
	if limit := session.CreatedAt.Add(s.maxLifetime); expires.After(limit) {
		expires = limit
	}
	if !expires.After(session.ExpiresAt) {
		return session, nil // never shortens
	}
	if err := s.store.SetExpiry(ctx, session.ID, expires); err != nil {
		return sandbox.Session{}, fmt.Errorf("keepalive: %w", err)
	}
	session.ExpiresAt = expires
	s.log.InfoContext(ctx, "sandbox_kept_alive",
		append(sessionAttrs(session.ChatID, session.ID, session.ContainerID), slog.Time("expires_at", expires))...)
	return session, nil
}

// touch extends the session by the TTL when its agent's profile says activity does.
func (s *Service) touch(ctx context.Context, session sandbox.Session) {
	if s.extendOnActivity == nil || !s.extendOnActivity(session.AgentID) {
		return
	}
	err := s.locked(ctx, session.ChatID, func(ctx context.Context) error {
		_, err := s.extend(ctx, session.ChatID, s.ttl)
		return err
	})
	if err != nil {
		s.log.WarnContext(ctx, "sandbox_keepalive_failed",
			append(sessionAttrs(session.ChatID, session.ID, session.ContainerID), slog.String("error", sandbox.ErrorType(err)))...)
	}
}

// liveSession returns the chat's session if it has not expired.
func (s *Service) liveSession(ctx context.Context, chatID uuid.UUID) (sandbox.Session, error) {
	session, err := s.store.Get(ctx, chatID)
	if errors.Is(err, sandbox.ErrNotFound) {
		return sandbox.Session{}, noSandbox(chatID)
	}
	if err != nil {
		return sandbox.Session{}, fmt.Errorf("chat %s: %w", chatID, err)
	}
	if session.Expired(s.clock.Now()) {
		return sandbox.Session{}, fmt.Errorf("chat %s: sandbox %s expired at %s: %w",
			chatID, session.ID, session.ExpiresAt.Format(time.RFC3339), sandbox.ErrExpired)
	}
	return session, nil
}

// WriteFile writes r to path in the chat's live workspace, up to the configured size.
// Errors: as Files.WriteFile, plus sandbox.ErrNotFound / ErrExpired for the chat.
func (s *Service) WriteFile(ctx context.Context, chatID uuid.UUID, path string, r io.Reader) (FileInfo, error) {
	var info FileInfo
	err := s.fileOp(ctx, "write", chatID, path, func(ctx context.Context, session sandbox.Session) error {
		var err error
		info, err = s.files.WriteFile(ctx, session, path, r, s.maxFileBytes)
		return err
	})
	return info, err
}

// OpenFile opens path in the chat's live workspace for reading; the caller closes it.
func (s *Service) OpenFile(ctx context.Context, chatID uuid.UUID, path string) (io.ReadCloser, FileInfo, error) {
	var (
		rc   io.ReadCloser
		info FileInfo
	)
	err := s.fileOp(ctx, "read", chatID, path, func(ctx context.Context, session sandbox.Session) error {
		var err error
		rc, info, err = s.files.OpenFile(ctx, session, path)
		return err
	})
	return rc, info, err
}

// ListDir lists the folder path of the chat's live workspace.
func (s *Service) ListDir(ctx context.Context, chatID uuid.UUID, path string) ([]FileInfo, error) {
	var infos []FileInfo
	err := s.fileOp(ctx, "list", chatID, path, func(ctx context.Context, session sandbox.Session) error {
		var err error
		infos, err = s.files.ListDir(ctx, session, path)
		return err
	})
	return infos, err
}

func (s *Service) fileOp(ctx context.Context, op string, chatID uuid.UUID, path string, fn func(context.Context, sandbox.Session) error) error {
	ctx, span := s.tracer.Start(ctx, "usecase.file_"+op, trace.WithAttributes(
		attribute.String("chat.id", chatID.String()), attribute.String("file.path", path)))
	defer span.End()
	err := func() error {
		if s.files == nil {
			return fmt.Errorf("no file access configured: %w", sandbox.ErrUnavailable)
		}
		session, err := s.liveSession(ctx, chatID)
		if err != nil {
			return err
		}
		span.SetAttributes(attribute.String("session.id", session.ID.String()))
		s.touch(ctx, session)
		return fn(ctx, session)
	}()
	outcome := "ok"
	if err != nil {
		outcome = string(Failed)
		err = fmt.Errorf("file %s %q: %w", op, path, err)
		failSpan(span, err)
	}
	s.m.fileTotal.Add(ctx, 1, metric.WithAttributes(attribute.String("op", op), result(outcome)))
	span.SetAttributes(attribute.String("sandbox.result", outcome))
	return err
}
