package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strings"

	"github.com/danielgtaylor/huma/v2"

	"github.com/sandboxd/sandboxd/internal/sandbox"
)

// Error codes: every problem document, every error event of a streamed exec and every
// MCP tool error carries one. They are part of the API: clients branch on them, so a
// code, once published, keeps its meaning.
const (
	CodeInvalid              = "invalid"
	CodeNotFound             = "not_found"
	CodeConflict             = "conflict"
	CodeWorkspaceInUse       = "workspace_in_use"
	CodeExpired              = "expired"
	CodeTooLarge             = "too_large"
	CodeBusy                 = "busy"
	CodeLimitExceeded        = "limit_exceeded"
	CodeUnavailable          = "unavailable"
	CodeFull                 = "full"
	CodeUnauthorized         = "unauthorized"
	CodeBadRequest           = "bad_request"
	CodeMethodNotAllowed     = "method_not_allowed"
	CodeUnsupportedMediaType = "unsupported_media_type"
	CodeInternal             = "internal"
)

// errorCodes is the one table of error codes. An error takes the first row whose err it
// wraps (errors.Is); an answer made from a status alone (huma's validation, the
// middlewares) takes the first row with that status. Rows without err are the answers
// of the HTTP layer itself.
var errorCodes = []struct {
	err    error
	code   string
	status int
}{
	{sandbox.ErrInvalid, CodeInvalid, http.StatusUnprocessableEntity},
	{sandbox.ErrNotFound, CodeNotFound, http.StatusNotFound},
	{sandbox.ErrConflict, CodeConflict, http.StatusConflict},
	{sandbox.ErrExpired, CodeExpired, http.StatusConflict},
	{sandbox.ErrWorkspaceInUse, CodeWorkspaceInUse, http.StatusConflict},
	{sandbox.ErrTooLarge, CodeTooLarge, http.StatusRequestEntityTooLarge},
	{sandbox.ErrBusy, CodeBusy, http.StatusTooManyRequests},
	{sandbox.ErrLimit, CodeLimitExceeded, http.StatusTooManyRequests},
	{sandbox.ErrUnavailable, CodeUnavailable, http.StatusServiceUnavailable},
	{sandbox.ErrFull, CodeFull, http.StatusInsufficientStorage},
	{context.DeadlineExceeded, CodeUnavailable, http.StatusServiceUnavailable},
	{nil, CodeUnauthorized, http.StatusUnauthorized},
	{nil, CodeBadRequest, http.StatusBadRequest},
	{nil, CodeMethodNotAllowed, http.StatusMethodNotAllowed},
	{nil, CodeUnsupportedMediaType, http.StatusUnsupportedMediaType},
	{nil, CodeInternal, http.StatusInternalServerError},
}

// ErrorCode returns the code and HTTP status of an error of the use cases: the row of
// the first sentinel it wraps, else "internal" and 500.
func ErrorCode(err error) (code string, status int) {
	for _, row := range errorCodes {
		if row.err != nil && errors.Is(err, row.err) {
			return row.code, row.status
		}
	}
	return CodeInternal, http.StatusInternalServerError
}

// codeForStatus is the code of an answer made from a status alone.
func codeForStatus(status int) string {
	for _, row := range errorCodes {
		if row.status == status {
			return row.code
		}
	}
	if status >= 500 {
		return CodeInternal
	}
	return CodeBadRequest
}

// errorCodeNames lists the codes once each, in the table's order, for the schema.
func errorCodeNames() []any {
	var names []any
	seen := map[string]bool{}
	for _, row := range errorCodes {
		if !seen[row.code] {
			seen[row.code] = true
			names = append(names, row.code)
		}
	}
	return names
}

// Problem is sandboxd's problem document: RFC 9457's members (huma's ErrorModel) and
// the stable code.
type Problem struct {
	huma.ErrorModel
	Code string `json:"code"`
}

// newProblem makes the problem document of a status, with code (empty: the status's).
func newProblem(status int, code, detail string) *Problem {
	if code == "" {
		code = codeForStatus(status)
	}
	return &Problem{
		ErrorModel: huma.ErrorModel{Title: http.StatusText(status), Status: status, Detail: detail},
		Code:       code,
	}
}

// documentCode adds the code to the ErrorModel schema that huma generates for every
// error response, since the transformer (withCode) puts it in every problem.
func documentCode(api huma.API) {
	schema := api.OpenAPI().Components.Schemas.Map()["ErrorModel"]
	if schema == nil {
		return
	}
	schema.Properties["code"] = &huma.Schema{
		Type: huma.TypeString,
		Description: "A stable code of the kind of error, for programs to branch on " +
			"(the status alone does not tell expired from conflict).",
		Enum:     errorCodeNames(),
		Examples: []any{CodeNotFound},
	}
	schema.Required = append(schema.Required, "code")
}

// withCode is a huma transformer: huma's own errors (validation, body) become problems
// with the code of their status.
func withCode(_ huma.Context, _ string, v any) (any, error) {
	m, ok := v.(*huma.ErrorModel)
	if !ok {
		return v, nil
	}
	return &Problem{ErrorModel: *m, Code: codeForStatus(m.Status)}, nil
}

// fail turns err into a problem document. Client errors carry the error's message;
// server errors carry a generic one and are logged, so no internals leak.
func (s *server) fail(ctx context.Context, op string, err error) error {
	if errors.Is(err, context.Canceled) && ctx.Err() != nil {
		return clientGone() // the client left: nobody reads the answer, nothing failed here
	}
	code, status := ErrorCode(err)
	switch {
	case status == http.StatusTooManyRequests:
		// A limit that was reached frees up as commands end and sandboxes expire or are
		// deleted: say when to come back.
		return huma.ErrorWithHeaders(newProblem(status, code, Detail(err)), http.Header{"Retry-After": {retryAfter}})
	case status == http.StatusInsufficientStorage:
		// A full volume is the operator's to fix, but its words (what is full, how much
		// is left) tell the client why, and that retrying at once is pointless.
		s.log.WarnContext(ctx, "request_refused_full", slog.String("operation", op), slog.String("error", err.Error()))
		return newProblem(status, code, Detail(err))
	case status < 500:
		return newProblem(status, code, Detail(err))
	}
	s.log.ErrorContext(ctx, "request_failed", slog.String("operation", op),
		slog.String("error", err.Error()), slog.String("error_type", sandbox.ErrorType(err)))
	if status == http.StatusServiceUnavailable {
		return newProblem(status, code, "a dependency of sandboxd is unavailable; try again later")
	}
	return newProblem(status, code, "internal error")
}

// retryAfter is the Retry-After (seconds) of a 429: a cap that was reached frees up as
// commands end and sandboxes expire or are deleted.
const retryAfter = "5"

// Detail is what a client is told of an error with a status under 500: the error's own
// words without the sentinel's trailing name ("chat id "x" is not a UUID", not
// "...: invalid"), since the code says that.
func Detail(err error) string {
	detail := err.Error()
	for _, row := range errorCodes {
		if row.err != nil {
			detail = strings.TrimSuffix(detail, ": "+row.err.Error())
		}
	}
	return detail
}

// writeProblem writes a problem document from outside huma (the middlewares).
func writeProblem(w http.ResponseWriter, status int, detail string) {
	writeProblemDoc(w, newProblem(status, "", detail))
}

func writeProblemDoc(w http.ResponseWriter, p *Problem) {
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(p.Status)
	_ = json.NewEncoder(w).Encode(p)
}

// asProblem returns the problem document of an error fail made.
func asProblem(err error) *Problem {
	var p *Problem
	if errors.As(err, &p) {
		return p
	}
	var m *huma.ErrorModel
	if errors.As(err, &m) {
		return &Problem{ErrorModel: *m, Code: codeForStatus(m.Status)}
	}
	return newProblem(http.StatusInternalServerError, CodeInternal, err.Error())
}

// WriteError writes err as a problem document with the status and code of its sentinel
// (errorCodes), for handlers served beside huma (the operator's page's data, webui):
// a client error's own words, a server error's generic ones.
func WriteError(w http.ResponseWriter, err error) {
	code, status := ErrorCode(err)
	detail := Detail(err)
	if status >= 500 {
		detail = "a dependency of sandboxd is unavailable or failed; try again later"
	}
	writeProblemDoc(w, newProblem(status, code, detail))
}
