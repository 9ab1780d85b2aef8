package lifecycle

import (
	"context"
	"fmt"
	"io"

	"github.com/google/uuid"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/sandboxd/sandboxd/internal/sandbox"
)

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
