package client

import (
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"strings"
)

// Sentinel errors, one per error code of the server. An *Error matches (errors.Is) the
// one of its code; an error of a server that sends no code matches by its status.
var (
	// ErrNotFound (not_found): the chat has no sandbox, or the file does not exist.
	ErrNotFound = errors.New("not found")
	// ErrConflict (conflict): the chat's live sandbox is another agent's or folder's.
	ErrConflict = errors.New("conflict")
	// ErrExpired (expired): the chat's sandbox has passed its TTL; create it again.
	ErrExpired = errors.New("expired")
	// ErrWorkspaceInUse (workspace_in_use): the workspace folder asked for is another
	// chat's; nothing was made. It matches ErrConflict too.
	ErrWorkspaceInUse = errors.New("workspace in use")
	// ErrInvalid (invalid, bad_request, unsupported_media_type, and too_large): the
	// request is malformed or not allowed; nothing was changed.
	ErrInvalid = errors.New("invalid")
	// ErrTooLarge (too_large): a body or file is over the server's limit.
	ErrTooLarge = errors.New("too large")
	// ErrBusy (busy): the sandbox runs as many commands as it may; try again later.
	ErrBusy = errors.New("busy")
	// ErrUnavailable (unavailable): a dependency of the server (engine, registry) could
	// not serve; try again later.
	ErrUnavailable = errors.New("unavailable")
	// ErrFull (full): the server's volume root is below its free-space floor, or the
	// workspace is full; nothing was made or written.
	ErrFull = errors.New("full")
	// ErrUnauthorized (unauthorized): the token is missing or not accepted.
	ErrUnauthorized = errors.New("unauthorized")
)

// Error codes the server sends (Error.Code).
const (
	CodeNotFound             = "not_found"
	CodeConflict             = "conflict"
	CodeWorkspaceInUse       = "workspace_in_use"
	CodeExpired              = "expired"
	CodeInvalid              = "invalid"
	CodeTooLarge             = "too_large"
	CodeBusy                 = "busy"
	CodeUnavailable          = "unavailable"
	CodeFull                 = "full"
	CodeUnauthorized         = "unauthorized"
	CodeBadRequest           = "bad_request"
	CodeMethodNotAllowed     = "method_not_allowed"
	CodeUnsupportedMediaType = "unsupported_media_type"
	CodeInternal             = "internal"
)

// sentinels maps the codes to the sentinels they match.
var sentinels = map[string][]error{
	CodeNotFound:             {ErrNotFound},
	CodeConflict:             {ErrConflict},
	CodeWorkspaceInUse:       {ErrWorkspaceInUse, ErrConflict},
	CodeExpired:              {ErrExpired},
	CodeInvalid:              {ErrInvalid},
	CodeBadRequest:           {ErrInvalid},
	CodeUnsupportedMediaType: {ErrInvalid},
	CodeTooLarge:             {ErrTooLarge, ErrInvalid},
	CodeBusy:                 {ErrBusy},
	CodeUnavailable:          {ErrUnavailable},
	CodeFull:                 {ErrFull},
	CodeUnauthorized:         {ErrUnauthorized},
}

// statusCodes gives an answer without a code (an older server, a proxy) the code of
// its status.
var statusCodes = map[int]string{
	http.StatusBadRequest:            CodeBadRequest,
	http.StatusUnauthorized:          CodeUnauthorized,
	http.StatusNotFound:              CodeNotFound,
	http.StatusConflict:              CodeConflict,
	http.StatusRequestEntityTooLarge: CodeTooLarge,
	http.StatusUnsupportedMediaType:  CodeUnsupportedMediaType,
	http.StatusUnprocessableEntity:   CodeInvalid,
	http.StatusTooManyRequests:       CodeBusy,
	http.StatusServiceUnavailable:    CodeUnavailable,
	http.StatusInsufficientStorage:   CodeFull,
}

// Error is a problem document (RFC 9457) the server answered with.
type Error struct {
	Status int    `json:"status"`
	Title  string `json:"title"`
	Detail string `json:"detail"`
	Type   string `json:"type,omitempty"`
	// Code is the server's stable code of the error (CodeNotFound, CodeExpired, ...).
	Code string `json:"code,omitempty"`
}

func (e *Error) Error() string {
	title := e.Title
	if title == "" {
		title = http.StatusText(e.Status)
	}
	if e.Detail == "" {
		return fmt.Sprintf("%d %s", e.Status, title)
	}
	return fmt.Sprintf("%d %s: %s", e.Status, title, e.Detail)
}

// Is reports whether target is the sentinel of the error's code (or, without a code,
// of its status).
func (e *Error) Is(target error) bool {
	code := e.Code
	if code == "" {
		code = statusCodes[e.Status]
	}
	for _, s := range sentinels[code] {
		if s == target {
			return true
		}
	}
	return false
}

// problem makes the *Error of a non-2xx answer; an answer that is not a problem
// document keeps its status and the start of its body as the detail.
func problem(resp *http.Response, data []byte) error {
	e := &Error{}
	mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if mt == "application/problem+json" || mt == "application/json" {
		if err := json.Unmarshal(data, e); err != nil {
			e = &Error{}
		}
	}
	if len(e.Code) > 64 {
		e.Code = "" // not one of ours
	}
	e.Status = resp.StatusCode
	if e.Title == "" {
		e.Title = http.StatusText(resp.StatusCode)
	}
	if e.Detail == "" {
		e.Detail = strings.TrimSpace(string(data[:min(len(data), 200)]))
	}
	if e.Code == "" {
		e.Code = statusCodes[e.Status]
	}
	return e
}
