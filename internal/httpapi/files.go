package httpapi

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/danielgtaylor/huma/v2"
	"github.com/danielgtaylor/huma/v2/adapters/humago"

	"github.com/sandboxd/sandboxd/internal/lifecycle"
	"github.com/sandboxd/sandboxd/internal/sandbox"
)

// The files of the chat's workspace: /v1/chats/{chat_id}/sandbox/files?path=...
//
// Uploads and downloads stream: neither is held whole in memory, and the upload is not
// subject to the API's body limit (the lifecycle's file size limit applies instead).
// Paths are relative to the workspace (or under its mount point); a path, or a symlink
// on it, that leads outside is refused with 422.

// filesPath is the path of the file routes below /v1; uploadPattern is the ServeMux
// pattern of the upload, which readBody lets through unbuffered.
const (
	filesPath     = "/chats/{chat_id}/sandbox/files"
	uploadPattern = http.MethodPut + " /v1" + filesPath
)

// fileInfo is one entry of the workspace.
type fileInfo struct {
	Path    string    `json:"path" doc:"Relative to the workspace, slash-separated." example:"src/main.go"`
	Size    int64     `json:"size"`
	Mode    string    `json:"mode" doc:"Type and permissions, as ls -l shows them." example:"-rw-r--r--"`
	ModTime time.Time `json:"mod_time"`
	IsDir   bool      `json:"is_dir"`
}

type fileList struct {
	Items []fileInfo `json:"items" nullable:"false"`
}

type fileQuery struct {
	ChatID string `path:"chat_id" maxLength:"64" doc:"The chat's UUID, in any spelling (hyphens or not, any case, braces, urn)." example:"0b6f1f7e-3c1a-4d0e-9a61-6f0d2c8e4b1a"`
	Path   string `query:"path" required:"true" minLength:"1" maxLength:"4096" doc:"The file, relative to the workspace or under its mount point." example:"src/main.go"`
}

type dirQuery struct {
	ChatID string `path:"chat_id" maxLength:"64" doc:"The chat's UUID, in any spelling (hyphens or not, any case, braces, urn)." example:"0b6f1f7e-3c1a-4d0e-9a61-6f0d2c8e4b1a"`
	Path   string `query:"path" maxLength:"4096" doc:"The folder; empty: the workspace itself."`
}

// putFileInput takes the request body as a stream: huma reads no body for an input
// without a Body field, and Resolve hands over the reader.
type putFileInput struct {
	ChatID string `path:"chat_id" maxLength:"64" doc:"The chat's UUID, in any spelling (hyphens or not, any case, braces, urn)." example:"0b6f1f7e-3c1a-4d0e-9a61-6f0d2c8e4b1a"`
	Path   string `query:"path" required:"true" minLength:"1" maxLength:"4096" doc:"The file, relative to the workspace or under its mount point." example:"src/main.go"`
	body   io.Reader
	rc     *http.ResponseController
}

func (in *putFileInput) Resolve(ctx huma.Context) []error {
	_, w := humago.Unwrap(ctx)
	in.body, in.rc = ctx.BodyReader(), http.NewResponseController(w)
	return nil
}

type fileInfoOutput struct {
	Body fileInfo
}

type fileListOutput struct {
	Body fileList
}

func (s *server) registerFiles(api huma.API) {
	binary := &huma.Schema{Type: huma.TypeString, Format: "binary"}
	huma.Register(api, s.v1(huma.Operation{
		OperationID: "put-file",
		Method:      http.MethodPut,
		Path:        filesPath,
		Summary:     "Upload a file to the chat's workspace",
		Description: "The body, of any media type, is the file's content; it replaces the file whole, " +
			"or not at all (a refused or broken upload leaves nothing). Missing folders are made. " +
			"Over the configured file size: 413.",
		Tags: []string{"files"},
		RequestBody: &huma.RequestBody{
			Required: true,
			Content: map[string]*huma.MediaType{
				"application/octet-stream": {Schema: binary},
				"*/*":                      {Schema: binary},
			},
		},
		Errors: []int{http.StatusNotFound, http.StatusConflict, http.StatusRequestEntityTooLarge,
			http.StatusUnprocessableEntity, http.StatusServiceUnavailable},
	}), s.putFile)

	huma.Register(api, s.v1(huma.Operation{
		OperationID: "get-file",
		Method:      http.MethodGet,
		Path:        filesPath,
		Summary:     "Download a file from the chat's workspace",
		Description: "Streams the regular file's content. Folders, devices and pipes are refused with 422.",
		Tags:        []string{"files"},
		Responses: map[string]*huma.Response{
			"200": {
				Description: "The file's content.",
				Content:     map[string]*huma.MediaType{"application/octet-stream": {Schema: binary}},
				Headers: map[string]*huma.Param{
					"Content-Length": {Schema: &huma.Schema{Type: huma.TypeInteger}},
					"Last-Modified":  {Schema: &huma.Schema{Type: huma.TypeString}},
				},
			},
		},
		Errors: []int{http.StatusNotFound, http.StatusConflict, http.StatusUnprocessableEntity, http.StatusServiceUnavailable},
	}), s.getFile)

	huma.Register(api, s.v1(huma.Operation{
		OperationID: "list-files",
		Method:      http.MethodGet,
		Path:        filesPath + "/list",
		Summary:     "List a folder of the chat's workspace",
		Description: "The folder's entries, ordered by path; links are listed, not followed.",
		Tags:        []string{"files"},
		Errors:      []int{http.StatusNotFound, http.StatusConflict, http.StatusUnprocessableEntity, http.StatusServiceUnavailable},
	}), s.listFiles)
}

func (s *server) putFile(ctx context.Context, in *putFileInput) (*fileInfoOutput, error) {
	chatID, err := sandbox.ParseChatID(in.ChatID)
	if err != nil {
		return nil, s.fail(ctx, "put-file", err)
	}
	// A large upload may outlast the server's read timeout; a stalled or slow one may not.
	body := &uploadReader{r: in.body, rc: in.rc, minRate: s.minUploadRate, grace: s.uploadGrace, start: time.Now()}
	_ = in.rc.SetReadDeadline(time.Time{})
	written, err := s.sandboxes.WriteFile(ctx, chatID, in.Path, body)
	if err != nil {
		// First: the server cancels the request's context once its body cannot be read.
		if body.tooSlow {
			s.log.WarnContext(ctx, "file_upload_too_slow", slog.Int64("bytes", body.n),
				slog.Duration("after", time.Since(body.start)))
			return nil, huma.NewError(http.StatusRequestTimeout, fmt.Sprintf(
				"the upload arrived slower than the minimum of %d bytes a second (%d bytes in %s); nothing was written",
				s.minUploadRate, body.n, time.Since(body.start).Round(time.Second)))
		}
		if ctx.Err() != nil {
			return nil, clientGone()
		}
		return nil, s.fail(ctx, "put-file", err)
	}
	return &fileInfoOutput{Body: renderFile(written)}, nil
}

func (s *server) getFile(ctx context.Context, in *fileQuery) (*huma.StreamResponse, error) {
	chatID, err := sandbox.ParseChatID(in.ChatID)
	if err != nil {
		return nil, s.fail(ctx, "get-file", err)
	}
	rc, info, err := s.sandboxes.OpenFile(ctx, chatID, in.Path)
	if err != nil {
		return nil, s.fail(ctx, "get-file", err)
	}
	return &huma.StreamResponse{Body: func(hctx huma.Context) {
		defer rc.Close()
		_, w := humago.Unwrap(hctx)
		h := w.Header()
		h.Set("Content-Type", "application/octet-stream")
		h.Set("Content-Length", strconv.FormatInt(info.Size, 10))
		h.Set("Last-Modified", info.ModTime.UTC().Format(http.TimeFormat))
		w.WriteHeader(http.StatusOK)
		// The file may grow or shrink meanwhile: the answer is the Size bytes promised
		// (a short one is cut, which the client sees as an unexpected EOF).
		rctl := http.NewResponseController(w)
		_ = rctl.SetWriteDeadline(time.Time{})
		if _, err := io.Copy(idleWriter{w: w, rc: rctl}, io.LimitReader(rc, info.Size)); err != nil && ctx.Err() == nil {
			s.log.WarnContext(ctx, "file_download_cut", "path", info.Path, "error", err.Error())
		}
	}}, nil
}

func (s *server) listFiles(ctx context.Context, in *dirQuery) (*fileListOutput, error) {
	chatID, err := sandbox.ParseChatID(in.ChatID)
	if err != nil {
		return nil, s.fail(ctx, "list-files", err)
	}
	found, err := s.sandboxes.ListDir(ctx, chatID, in.Path)
	if err != nil {
		return nil, s.fail(ctx, "list-files", err)
	}
	out := fileList{Items: make([]fileInfo, 0, len(found))}
	for _, f := range found {
		out.Items = append(out.Items, renderFile(f))
	}
	slices.SortFunc(out.Items, func(a, b fileInfo) int { return strings.Compare(a.Path, b.Path) })
	return &fileListOutput{Body: out}, nil
}

func renderFile(f lifecycle.FileInfo) fileInfo {
	return fileInfo{Path: f.Path, Size: f.Size, Mode: f.Mode.String(), ModTime: f.ModTime.UTC(), IsDir: f.Mode.IsDir()}
}

// uploadReader reads a client's upload under a deadline: each read may wait streamIdle
// at most, and, with a minimum rate, no longer than the moment the upload would fall
// below it (after the grace at its start). tooSlow says that a deadline cut it off.
type uploadReader struct {
	r       io.Reader
	rc      *http.ResponseController
	minRate int64 // bytes per second; <= 0: none
	grace   time.Duration
	start   time.Time

	n       int64
	tooSlow bool
}

func (u *uploadReader) Read(p []byte) (int, error) {
	deadline := time.Now().Add(streamIdle)
	if u.minRate > 0 {
		// The moment by which the next byte must have come for the average to hold.
		due := u.start.Add(u.grace + time.Duration(float64(u.n+1)/float64(u.minRate)*float64(time.Second)))
		if due.Before(deadline) {
			deadline = due
		}
	}
	_ = u.rc.SetReadDeadline(deadline)
	n, err := u.r.Read(p)
	u.n += int64(n)
	if err != nil && errors.Is(err, os.ErrDeadlineExceeded) {
		u.tooSlow = true
	}
	return n, err
}
