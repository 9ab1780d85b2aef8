package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/google/uuid"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/sandboxd/sandboxd/internal/sandbox"
)

// Workspace folders outlive their sandboxes on purpose (the chat may come back); these
// use cases remove them: on request (DeleteWorkspace) and by the retention policy
// (SweepWorkspaces).

// Folder is a workspace folder of the volume root.
type Folder struct {
	Path string
	// ChatID is the chat the folder was derived for (named after it, made by the
	// runtime); uuid.Nil for a folder the caller provided.
	ChatID uuid.UUID
	// LastUsed is when a sandbox last ended with it as its workspace (or, for a folder
	// no sandbox has used, when it was last changed).
	LastUsed time.Time
}

// Workspaces manages the workspace folders of the volume root.
type Workspaces interface {
	// Derive returns the folder a chat of tenant gets when it names none (in that
	// tenant's part of the volume).
	Derive(tenant string, chatID uuid.UUID) string
	// Folders lists the workspace folders (not the runtime's own, such as the pool's).
	Folders(ctx context.Context) ([]Folder, error)
	// Touch marks the folder path used at t. A missing folder is no error.
	Touch(ctx context.Context, path string, t time.Time) error
	// RemoveFolder removes the folder path and everything in it. It reports false, and
	// no error, when there was none.
	RemoveFolder(ctx context.Context, path string) (removed bool, err error)
}

// Why a workspace folder was removed, as logged and counted.
const (
	removedOnRequest   = "request"
	removedByRetention = "retention"
)

// WorkspaceResult tells what DeleteWorkspace did: Result is "removed" or NotFound.
type WorkspaceResult struct {
	ChatID uuid.UUID
	Path   string
	Result Outcome
}

// Removed is the outcome of DeleteWorkspace for a folder that was there.
const Removed Outcome = "removed"

// DeleteWorkspace removes the chat's own workspace folder (the one derived for it in the
// caller's tenant's part of the volume: another tenant's folder is never reached) and
// everything in it. It is refused with sandbox.ErrConflict while the chat has a sandbox,
// expired or not (delete it first: its container may still run on the folder). A chat
// without a folder is no error (Result NotFound). Folders the caller provided are not the
// chat's to remove. Errors: sandbox.ErrUnavailable (no Workspaces), the registry's or the
// folder removal's.
func (s *Service) DeleteWorkspace(ctx context.Context, chatID uuid.UUID) (WorkspaceResult, error) {
	ctx, span := s.tracer.Start(ctx, "usecase.delete_workspace",
		trace.WithAttributes(attribute.String("chat.id", chatID.String())))
	defer span.End()
	res := WorkspaceResult{ChatID: chatID, Result: NotFound}
	if s.workspaces == nil {
		return res, fmt.Errorf("delete workspace: no workspaces configured: %w", sandbox.ErrUnavailable)
	}
	res.Path = s.workspaces.Derive(sandbox.TenantFrom(ctx), chatID)
	err := s.locked(ctx, chatID, func(ctx context.Context) error {
		current, err := s.store.Get(ctx, chatID)
		switch {
		case err == nil && current.TenantOf() != sandbox.TenantFrom(ctx):
			// Another tenant's chat: answered as a chat without a folder, and its folder
			// (in use by that tenant's sandbox) is left alone.
			return nil
		case err == nil:
			return fmt.Errorf("delete workspace: chat %s has a sandbox (session %s): delete it first: %w",
				chatID, current.ID, sandbox.ErrConflict)
		case !errors.Is(err, sandbox.ErrNotFound):
			return fmt.Errorf("delete workspace: read registry: %w", err)
		}
		removed, err := s.workspaces.RemoveFolder(ctx, res.Path)
		if err != nil {
			return fmt.Errorf("delete workspace of chat %s: %w", chatID, err)
		}
		if removed {
			res.Result = Removed
			s.workspaceRemoved(ctx, Folder{Path: res.Path, ChatID: chatID}, removedOnRequest)
		}
		return nil
	})
	span.SetAttributes(attribute.String("sandbox.result", string(res.Result)))
	if err != nil {
		failSpan(span, err)
		return WorkspaceResult{ChatID: chatID, Path: res.Path, Result: Failed}, err
	}
	return res, nil
}

// SweepWorkspaces applies the retention policy (WorkspaceRetention): it removes the
// workspace folders that no session uses and that no sandbox has used for longer than the
// retention; only those derived for a chat, unless RemoveProvidedWorkspaces is set. It
// returns the folders removed; a failure is logged and the sweep goes on. The error is
// for a registry or volume root that cannot be listed: then nothing is removed.
func (s *Service) SweepWorkspaces(ctx context.Context) ([]Folder, error) {
	if s.workspaces == nil || s.workspaceRetention <= 0 {
		return nil, nil
	}
	ctx, span := s.tracer.Start(ctx, "usecase.sweep_workspaces")
	defer span.End()

	// Folders first, then the records: a folder whose session is saved after the first
	// listing is seen in use in the second.
	folders, err := s.workspaces.Folders(ctx)
	if err != nil {
		err = fmt.Errorf("sweep workspaces: list folders: %w", err)
		failSpan(span, err)
		return nil, err
	}
	inUse := map[string]bool{}
	for after := uuid.Nil; ; {
		page, err := s.store.List(ctx, ListFilter{After: after, Limit: 500})
		if err != nil {
			err = fmt.Errorf("sweep workspaces: list registry: %w", err)
			failSpan(span, err)
			return nil, err
		}
		for _, r := range page {
			inUse[r.VolumeHostPath] = true
		}
		if len(page) < 500 {
			break
		}
		after = page[len(page)-1].ChatID
	}

	cutoff := s.clock.Now().Add(-s.workspaceRetention)
	var removed []Folder
	for _, f := range folders {
		if ctx.Err() != nil {
			break
		}
		if inUse[f.Path] || !f.LastUsed.Before(cutoff) || (f.ChatID == uuid.Nil && !s.removeProvided) {
			continue
		}
		if ok, err := s.retire(ctx, f); err != nil {
			s.log.ErrorContext(ctx, "workspace_remove_failed", slog.String("path", f.Path),
				slog.String("error", sandbox.ErrorType(err)))
		} else if ok {
			removed = append(removed, f)
		}
	}
	span.SetAttributes(attribute.Int("sandbox.workspace.removed", len(removed)))
	return removed, nil
}

// retire removes one folder past its retention: a chat's under the chat's lock, once the
// registry says again that the chat has no session.
func (s *Service) retire(ctx context.Context, f Folder) (bool, error) {
	remove := func(ctx context.Context) (bool, error) {
		ok, err := s.workspaces.RemoveFolder(ctx, f.Path)
		if ok {
			s.workspaceRemoved(ctx, f, removedByRetention)
		}
		return ok, err
	}
	if f.ChatID == uuid.Nil {
		return remove(ctx)
	}
	var ok bool
	err := s.locked(ctx, f.ChatID, func(ctx context.Context) error {
		_, err := s.store.Get(ctx, f.ChatID)
		switch {
		case err == nil:
			return nil // a sandbox came meanwhile
		case !errors.Is(err, sandbox.ErrNotFound):
			return fmt.Errorf("read registry: %w", err)
		}
		ok, err = remove(ctx)
		return err
	})
	return ok, err
}

func (s *Service) workspaceRemoved(ctx context.Context, f Folder, reason string) {
	attrs := []any{slog.String("path", f.Path), slog.String("reason", reason)}
	if f.ChatID != uuid.Nil {
		attrs = append(attrs, slog.String("chat_id", f.ChatID.String()))
	}
	if !f.LastUsed.IsZero() {
		attrs = append(attrs, slog.Time("last_used", f.LastUsed))
	}
	s.log.InfoContext(ctx, "workspace_removed", attrs...)
	s.m.workspaceRemoved.Add(ctx, 1, metric.WithAttributes(attribute.String("reason", reason)))
}

// touchWorkspace records that the sandbox of session has ended now, for the retention
// policy; a failure is logged only.
func (s *Service) touchWorkspace(ctx context.Context, session sandbox.Session) {
	if s.workspaces == nil || session.VolumeHostPath == "" {
		return
	}
	if err := s.workspaces.Touch(ctx, session.VolumeHostPath, s.clock.Now()); err != nil {
		s.log.WarnContext(ctx, "workspace_touch_failed", append(sessionAttrs(session.ChatID, session.ID, session.ContainerID),
			slog.String("error", err.Error()))...)
	}
}
