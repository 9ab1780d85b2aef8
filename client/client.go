// Package client is the Go client of sandboxd's HTTP API: a chat's sandbox (create or
// reuse, get, delete, list), commands run in it (buffered, or streamed as the output
// comes), the files of its workspace (streamed upload and download, listing) and
// keepalive.
//
//	c, err := client.New("http://127.0.0.1:8080", token, nil)
//	s, result, err := c.Create(ctx, chatID, client.CreateBody{})
//	res, err := c.Exec(ctx, chatID, client.ExecBody{Cmd: []string{"sh", "-c", "echo hi"}})
//
// Every error the server answers with is an *Error carrying the status, the stable
// code and the detail of its problem document; errors.Is matches it against this
// package's sentinels (ErrNotFound, ErrExpired, ...), one per code. A Client is safe for
// concurrent use. The API is stable: within a major version, methods and fields are only
// added.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
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
	Removed  Result = "removed" // DeleteWorkspace
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
// A live sandbox for another agent or folder is an *Error matching ErrConflict; a
// malformed chat id or body one matching ErrInvalid.
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

// Get returns the chat's sandbox, expired or not (Session.Expired says which). A chat
// with none is an *Error matching ErrNotFound.
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

// WorkspaceResult is the answer to DeleteWorkspace: Result is Removed or NotFound.
type WorkspaceResult struct {
	ChatID string `json:"chat_id"`
	Result Result `json:"result"`
	Path   string `json:"path"` // the chat's workspace folder on the server's host
}

// DeleteWorkspace removes the chat's workspace folder and everything in it. A chat with
// none is no error (Result NotFound); one that has a sandbox is an *Error matching
// ErrConflict (delete the sandbox first).
func (c *Client) DeleteWorkspace(ctx context.Context, chatID string) (WorkspaceResult, error) {
	var out WorkspaceResult
	path := "/v1/chats/" + url.PathEscape(chatID) + "/workspace"
	if err := c.do(ctx, http.MethodDelete, path, nil, nil, &out); err != nil {
		return WorkspaceResult{}, err
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
