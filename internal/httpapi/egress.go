package httpapi

import (
	"context"
	"net/http"
	"time"

	"github.com/danielgtaylor/huma/v2"

	"github.com/sandboxd/sandboxd/internal/egress"
	"github.com/sandboxd/sandboxd/internal/sandbox"
)

// The chat's refused network connections: GET /v1/chats/{chat_id}/sandbox/egress.

type egressInput struct {
	ChatID string `path:"chat_id" maxLength:"64" doc:"The chat's UUID, in any spelling (hyphens or not, any case, braces, urn)." example:"0b6f1f7e-3c1a-4d0e-9a61-6f0d2c8e4b1a"`
}

type denialBody struct {
	Time        time.Time `json:"time" doc:"When the proxy refused the connection."`
	Destination string    `json:"destination" doc:"host:port as the sandbox asked for it." example:"example.com:443"`
	Reason      string    `json:"reason" enum:"denied,not_allowed,internal,unresolved,unknown_sandbox,bad_request,sni_mismatch" doc:"Why: a deny rule (denied), no allow rule (not_allowed), an internal address no allow prefix names (internal), a name that does not resolve (unresolved), not a proxy request it serves (bad_request), a TLS server name that is not the tunnel's host (sni_mismatch)."`
	Detail      string    `json:"detail" doc:"Which rule or address decided." example:"no allow rule names example.com port 443"`
}

type egressBody struct {
	ChatID    string       `json:"chat_id"`
	SessionID string       `json:"session_id"`
	Denials   []denialBody `json:"denials" doc:"The sandbox's recent refused connections, newest first (at most 100; older ones are forgotten). Empty for a profile without network egress."`
}

type egressOutput struct {
	Body egressBody
}

func (s *server) registerEgress(api huma.API) {
	huma.Register(api, s.v1(huma.Operation{
		OperationID: "list-egress-denials",
		Method:      http.MethodGet,
		Path:        "/chats/{chat_id}/sandbox/egress",
		Summary:     "List the sandbox's refused network connections",
		Description: "The connections the egress proxy refused to the chat's current sandbox (profiles with " +
			"network egress), newest first, with the reason: why a pip install or a git clone failed.",
		Tags:   []string{"sandbox"},
		Errors: []int{http.StatusNotFound, http.StatusUnprocessableEntity, http.StatusServiceUnavailable},
	}), s.egressDenials)
}

func (s *server) egressDenials(ctx context.Context, in *egressInput) (*egressOutput, error) {
	chatID, err := sandbox.ParseChatID(in.ChatID)
	if err != nil {
		return nil, s.fail(ctx, "list-egress-denials", err)
	}
	sess, err := s.sandboxes.Get(ctx, chatID) // the caller's tenant's only
	if err != nil {
		return nil, s.fail(ctx, "list-egress-denials", err)
	}
	out := egressBody{ChatID: sess.ChatID.String(), SessionID: sess.ID.String(), Denials: []denialBody{}}
	if s.denials != nil {
		for _, d := range s.denials(out.ChatID, out.SessionID) {
			out.Denials = append(out.Denials, denialBody{Time: d.Time, Destination: d.Destination,
				Reason: string(d.Reason), Detail: d.Detail})
		}
	}
	return &egressOutput{Body: out}, nil
}

// Denials is what the egress route needs of the proxy: a chat's session's refused
// connections, newest first (*egress.Proxy's Denials).
type Denials func(chatID, sessionID string) []egress.Denial
