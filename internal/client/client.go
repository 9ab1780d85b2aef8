// Package client is a Go client of the sandboxd HTTP API.
//
// Errors the server answers with a problem document come back as *Error, which carries
// the status, title and detail; errors.Is maps it to the domain's sentinels (404 to
// sandbox.ErrNotFound, 409 to sandbox.ErrConflict, 400/413/415/422 to sandbox.ErrInvalid,
// 413 to sandbox.ErrTooLarge too, 429 to sandbox.ErrBusy, 503 to sandbox.ErrUnavailable).
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/sandboxd/sandboxd/internal/sandbox"
)

// Session is a chat's sandbox.
type Session struct {
	SessionID      string    `json:"session_id"`
	ChatID         string    `json:"chat_id"`
	ContainerID    string    `json:"container_id"`
	Status         string    `json:"status"`
	CreatedAt      time.Time `json:"created_at"`
	ExpiresAt      time.Time `json:"expires_at"`
	AgentID        string    `json:"agent_id"`
	VolumeHostPath string    `json:"volume_host_path"`
	Expired        bool      `json:"expired"`
}

// Result says what a create or delete did.
type Result string

// Results of Create and Delete.
const (
	Created  Result = "created"
	Reused   Result = "reused"
	Replaced Result = "replaced"
	Deleted  Result = "deleted"
	NotFound Result = "not_found"
)

// CreateBody is what a create asks for; both fields are optional.
type CreateBody struct {
	AgentID        string `json:"agent_id,omitempty"`
	VolumeHostPath string `json:"volume_host_path,omitempty"`
}

// DeleteResult tells what a delete did; the ids are empty when there was nothing.
type DeleteResult struct {
	ChatID      string `json:"chat_id"`
	Result      Result `json:"result"`
	SessionID   string `json:"session_id"`
	ContainerID string `json:"container_id"`
}

// ListOptions select a page of List. Zero values mean "no filter" and the server's
// default page size.
type ListOptions struct {
	AgentID string
	Expired *bool  // only expired (true) or live (false) sandboxes, when set
	After   string // the previous page's Next
	Limit   int
}

// Page is one page of List. Next is empty on the last page.
type Page struct {
	Items []Session `json:"items"`
	Next  string    `json:"next"`
}

// Error is a problem document (RFC 9457) the server answered with.
type Error struct {
	Status int    `json:"status"`
	Title  string `json:"title"`
	Detail string `json:"detail"`
	Type   string `json:"type,omitempty"`
	// Code is the server's stable code of the error ("not_found", "expired", ...).
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

// codes maps the server's error codes to the domain's sentinels.
var codes = map[string]error{
	"not_found":              sandbox.ErrNotFound,
	"conflict":               sandbox.ErrConflict,
	"expired":                sandbox.ErrExpired,
	"invalid":                sandbox.ErrInvalid,
	"bad_request":            sandbox.ErrInvalid,
	"unsupported_media_type": sandbox.ErrInvalid,
	"too_large":              sandbox.ErrTooLarge,
	"busy":                   sandbox.ErrBusy,
	"unavailable":            sandbox.ErrUnavailable,
}

// Is maps the code (or, from a server that sends none, the status) to the domain's
// sentinel errors. A too_large error matches ErrInvalid too.
func (e *Error) Is(target error) bool {
	if e.Code != "" {
		sentinel := codes[e.Code]
		return target == sentinel || (target == sandbox.ErrInvalid && sentinel == sandbox.ErrTooLarge)
	}
	switch target {
	case sandbox.ErrNotFound:
		return e.Status == http.StatusNotFound
	case sandbox.ErrConflict:
		return e.Status == http.StatusConflict
	case sandbox.ErrInvalid:
		switch e.Status {
		case http.StatusBadRequest, http.StatusRequestEntityTooLarge,
			http.StatusUnsupportedMediaType, http.StatusUnprocessableEntity:
			return true
		}
	case sandbox.ErrTooLarge:
		return e.Status == http.StatusRequestEntityTooLarge
	case sandbox.ErrBusy:
		return e.Status == http.StatusTooManyRequests
	case sandbox.ErrUnavailable:
		return e.Status == http.StatusServiceUnavailable
	}
	return false
}

// Client talks to one sandboxd. It is safe for concurrent use.
type Client struct {
	base  *url.URL
	token string
	hc    *http.Client
}

// New returns a client of the sandboxd at baseURL (e.g. http://127.0.0.1:8080), sending
// token as a bearer token when it is not empty. A nil httpClient means
// http.DefaultClient. The error is for a baseURL that is not an absolute http(s) URL.
func New(baseURL, token string, httpClient *http.Client) (*Client, error) {
	u, err := url.Parse(strings.TrimRight(baseURL, "/"))
	if err != nil {
		return nil, fmt.Errorf("client: server URL %q: %w", baseURL, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("client: server URL %q is not an http(s) URL", baseURL)
	}
	if httpClient == nil {
		httpClient = http.DefaultClient
	}
	return &Client{base: u, token: token, hc: httpClient}, nil
}

// Create returns the chat's live sandbox, making one when there is none or the one
// there is has expired, and says which of Created, Reused or Replaced happened.
// A live sandbox for another agent or folder is an *Error matching sandbox.ErrConflict;
// a malformed chat id or body one matching sandbox.ErrInvalid.
func (c *Client) Create(ctx context.Context, chatID string, body CreateBody) (Session, Result, error) {
	var out struct {
		Session
		Result Result `json:"result"`
	}
	if err := c.do(ctx, http.MethodPut, sandboxPath(chatID), nil, body, &out); err != nil {
		return Session{}, "", err
	}
	return out.Session, out.Result, nil
}

// Get returns the chat's sandbox, expired or not. A chat with none is an *Error
// matching sandbox.ErrNotFound.
func (c *Client) Get(ctx context.Context, chatID string) (Session, error) {
	var out Session
	if err := c.do(ctx, http.MethodGet, sandboxPath(chatID), nil, nil, &out); err != nil {
		return Session{}, err
	}
	return out, nil
}

// Delete removes the chat's sandbox. A chat with none is no error: Result is NotFound.
func (c *Client) Delete(ctx context.Context, chatID string) (DeleteResult, error) {
	var out DeleteResult
	if err := c.do(ctx, http.MethodDelete, sandboxPath(chatID), nil, nil, &out); err != nil {
		return DeleteResult{}, err
	}
	return out, nil
}

// List returns one page of sandboxes, ordered by chat id.
func (c *Client) List(ctx context.Context, opts ListOptions) (Page, error) {
	q := url.Values{}
	if opts.AgentID != "" {
		q.Set("agent_id", opts.AgentID)
	}
	if opts.Expired != nil {
		q.Set("expired", strconv.FormatBool(*opts.Expired))
	}
	if opts.After != "" {
		q.Set("after", opts.After)
	}
	if opts.Limit > 0 {
		q.Set("limit", strconv.Itoa(opts.Limit))
	}
	var out Page
	if err := c.do(ctx, http.MethodGet, "/v1/sandboxes", q, nil, &out); err != nil {
		return Page{}, err
	}
	return out, nil
}

func sandboxPath(chatID string) string {
	return "/v1/chats/" + url.PathEscape(chatID) + "/sandbox"
}

// do sends one request with a JSON body (none when in is nil) and decodes a 2xx JSON
// answer into out, or a problem into *Error.
func (c *Client) do(ctx context.Context, method, path string, query url.Values, in, out any) error {
	var (
		body        io.Reader
		contentType string
	)
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("client: %s %s: encode body: %w", method, path, err)
		}
		body, contentType = bytes.NewReader(b), "application/json"
	}
	resp, err := c.send(ctx, method, path, query, body, contentType, "application/json")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("client: %s %s: read answer: %w", method, path, err)
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("client: %s %s: decode answer: %w", method, path, err)
	}
	return nil
}

// send sends one request and returns a 2xx answer, whose body the caller closes; any
// other answer becomes an *Error.
func (c *Client) send(ctx context.Context, method, path string, query url.Values, body io.Reader, contentType, accept string) (*http.Response, error) {
	target := c.base.String() + path // path is escaped already (sandboxPath)
	if len(query) > 0 {
		target += "?" + query.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, target, body)
	if err != nil {
		return nil, fmt.Errorf("client: %s %s: %w", method, path, err)
	}
	req.Header.Set("Accept", accept+", application/problem+json")
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("client: %s %s: %w", method, path, err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		defer resp.Body.Close()
		data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		if err != nil {
			return nil, fmt.Errorf("client: %s %s: read answer: %w", method, path, err)
		}
		return nil, problem(resp, data)
	}
	return resp, nil
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
	e.Status = resp.StatusCode
	if e.Title == "" {
		e.Title = http.StatusText(resp.StatusCode)
	}
	if e.Detail == "" {
		e.Detail = strings.TrimSpace(string(data[:min(len(data), 200)]))
	}
	return e
}
