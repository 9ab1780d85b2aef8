package client

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"
)

// FileInfo is one entry of a sandbox's workspace.
type FileInfo struct {
	Path    string    `json:"path"` // relative to the workspace
	Size    int64     `json:"size"`
	Mode    string    `json:"mode"` // as ls -l shows it
	ModTime time.Time `json:"mod_time"`
	IsDir   bool      `json:"is_dir"`
}

// Upload writes r to path in the chat's workspace, replacing the file whole. r is
// streamed, not held in memory. A file over the server's limit is an *Error matching
// ErrTooLarge; a path outside the workspace one matching ErrInvalid.
func (c *Client) Upload(ctx context.Context, chatID, path string, r io.Reader) (FileInfo, error) {
	resp, err := c.send(ctx, http.MethodPut, filesPath(chatID), url.Values{"path": {path}}, r,
		"application/octet-stream", "application/json")
	if err != nil {
		return FileInfo{}, err
	}
	defer resp.Body.Close()
	var out FileInfo
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&out); err != nil {
		return FileInfo{}, fmt.Errorf("client: upload %s: decode answer: %w", path, err)
	}
	return out, nil
}

// Download writes the file path of the chat's workspace to w and returns how many
// bytes it wrote. An answer cut short is an error wrapping io.ErrUnexpectedEOF.
func (c *Client) Download(ctx context.Context, chatID, path string, w io.Writer) (int64, error) {
	resp, err := c.send(ctx, http.MethodGet, filesPath(chatID), url.Values{"path": {path}}, nil, "", "application/octet-stream")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	n, err := io.Copy(w, resp.Body)
	if err != nil {
		return n, fmt.Errorf("client: download %s: %w", path, err)
	}
	if resp.ContentLength >= 0 && n != resp.ContentLength {
		return n, fmt.Errorf("client: download %s: got %d of %d bytes: %w", path, n, resp.ContentLength, io.ErrUnexpectedEOF)
	}
	return n, nil
}

// ListFiles lists the folder path of the chat's workspace ("" for the workspace).
func (c *Client) ListFiles(ctx context.Context, chatID, path string) ([]FileInfo, error) {
	var q url.Values
	if path != "" {
		q = url.Values{"path": {path}}
	}
	var out struct {
		Items []FileInfo `json:"items"`
	}
	if err := c.do(ctx, http.MethodGet, filesPath(chatID)+"/list", q, nil, &out); err != nil {
		return nil, err
	}
	return out.Items, nil
}

func filesPath(chatID string) string { return sandboxPath(chatID) + "/files" }
