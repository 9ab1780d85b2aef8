package lifecycle

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/google/uuid"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/sandboxd/sandboxd/internal/sandbox"
)

// TerminalRequest asks for an interactive shell in the chat's live sandbox.
type TerminalRequest struct {
	ChatID uuid.UUID
	TerminalIO
}

// Terminal runs an interactive shell on a pseudo-terminal in the chat's live sandbox (as
// its user) until the shell exits, and returns its exit code. The session counts as one
// of the sandbox's (and its tenant's) concurrent commands while it lasts, has no timeout,
// and ends when the sandbox ends; a caller that goes away (ctx ends) kills the shell and
// everything it started. Errors: as Exec's (sandbox.ErrNotFound also for another
// tenant's chat, sandbox.ErrExpired, sandbox.ErrBusy, sandbox.ErrLimit), and
// sandbox.ErrUnavailable when no runtime offers terminals.
func (s *Service) Terminal(ctx context.Context, req TerminalRequest) (int, error) {
	tenant := sandbox.TenantFrom(ctx)
	ctx, span := s.tracer.Start(ctx, "usecase.terminal",
		trace.WithAttributes(attribute.String("chat.id", req.ChatID.String()), tenantAttr(tenant)))
	defer span.End()
	code, err := s.terminal(ctx, span, req)
	if err != nil {
		failSpan(span, err)
		return -1, err
	}
	span.SetAttributes(attribute.Int("process.exit.code", code))
	return code, nil
}

func (s *Service) terminal(ctx context.Context, span trace.Span, req TerminalRequest) (int, error) {
	if s.terminals == nil {
		return -1, fmt.Errorf("terminal: no runtime offers terminals: %w", sandbox.ErrUnavailable)
	}
	session, err := s.liveSession(ctx, req.ChatID)
	if err != nil {
		return -1, fmt.Errorf("terminal: %w", err)
	}
	release, _, err := s.takeExecSlot(session)
	if err != nil {
		return -1, fmt.Errorf("terminal: %w", err)
	}
	defer release()
	span.SetAttributes(
		attribute.String("session.id", session.ID.String()),
		attribute.String("container.id", session.ContainerID))
	s.touch(ctx, session)
	s.log.InfoContext(ctx, "sandbox_terminal_opened", logAttrs(session)...)
	s.event(session, EventTerminal, "opened")
	code, err := s.terminals.Terminal(ctx, session.ContainerID, req.TerminalIO)
	switch {
	case ctx.Err() != nil:
		s.log.InfoContext(ctx, "sandbox_terminal_closed", append(logAttrs(session), slog.String("ended", "caller_gone"))...)
		s.event(session, EventTerminal, "closed by the client")
		return -1, fmt.Errorf("terminal: caller gone: %w", ctx.Err())
	case err != nil:
		return -1, fmt.Errorf("terminal in %s: %w", session.ContainerID, err)
	}
	s.log.InfoContext(ctx, "sandbox_terminal_closed", append(logAttrs(session), slog.Int("exit_code", code))...)
	s.event(session, EventTerminal, fmt.Sprintf("exit %d", code))
	return code, nil
}
