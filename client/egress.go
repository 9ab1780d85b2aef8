package client

import (
	"context"
	"net/http"
	"time"
)

// Denial is one connection the egress proxy refused to a sandbox.
type Denial struct {
	Time        time.Time `json:"time"`
	Destination string    `json:"destination"` // host:port as the sandbox asked for it
	// Reason is why: denied (a deny rule), not_allowed (no allow rule), internal (an
	// internal address no allow prefix names), unresolved, bad_request, sni_mismatch.
	Reason string `json:"reason"`
	Detail string `json:"detail"` // which rule or address decided
}

// EgressDenials lists the connections the egress proxy refused to the chat's current
// sandbox, newest first (at most 100): why a download failed. A chat without a sandbox
// is an *Error matching ErrNotFound.
func (c *Client) EgressDenials(ctx context.Context, chatID string) ([]Denial, error) {
	var out struct {
		Denials []Denial `json:"denials"`
	}
	if err := c.do(ctx, http.MethodGet, sandboxPath(chatID)+"/egress", nil, nil, &out); err != nil {
		return nil, err
	}
	return out.Denials, nil
}
