package client

import (
	"context"
	"net/http"
	"time"
)

// Keepalive sets the chat's live sandbox to expire ttl from now (rounded up to whole
// seconds), within the server's maximum lifetime, and returns it. An expired sandbox is
// an *Error matching ErrExpired: it is not revived.
func (c *Client) Keepalive(ctx context.Context, chatID string, ttl time.Duration) (Session, error) {
	body := struct {
		TTLS int64 `json:"ttl_s"`
	}{TTLS: int64((ttl + time.Second - 1) / time.Second)}
	var out Session
	if err := c.do(ctx, http.MethodPost, sandboxPath(chatID)+"/keepalive", nil, body, &out); err != nil {
		return Session{}, err
	}
	return out, nil
}
