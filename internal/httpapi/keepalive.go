package httpapi

import (
	"context"
	"net/http"

	"github.com/danielgtaylor/huma/v2"

	"github.com/sandboxd/sandboxd/internal/sandbox"
)

// Keeping the chat's sandbox alive: POST /v1/chats/{chat_id}/sandbox/keepalive.

type keepaliveBody struct {
	TTLS int64 `json:"ttl_s" minimum:"1" doc:"Seconds from now the sandbox is to live; capped by the configured maximum lifetime counted from its creation." example:"600"`
}

type keepaliveInput struct {
	ChatID string `path:"chat_id" maxLength:"64" doc:"The chat's UUID, in any spelling (hyphens or not, any case, braces, urn)." example:"0b6f1f7e-3c1a-4d0e-9a61-6f0d2c8e4b1a"`
	Body   keepaliveBody
}

func (s *server) registerKeepalive(api huma.API) {
	huma.Register(api, s.v1(huma.Operation{
		OperationID: "keepalive-sandbox",
		Method:      http.MethodPost,
		Path:        "/chats/{chat_id}/sandbox/keepalive",
		Summary:     "Keep the chat's sandbox alive",
		Description: "Sets the live sandbox to expire ttl_s from now, but never later than the configured " +
			"maximum lifetime after its creation, and never earlier than it already does. " +
			"An expired sandbox is not revived (409): create replaces it.",
		Tags: []string{"sandbox"},
		Errors: []int{http.StatusNotFound, http.StatusConflict, http.StatusRequestEntityTooLarge,
			http.StatusUnsupportedMediaType, http.StatusUnprocessableEntity, http.StatusServiceUnavailable},
	}), s.keepalive)
}

func (s *server) keepalive(ctx context.Context, in *keepaliveInput) (*sessionOutput, error) {
	chatID, err := sandbox.ParseChatID(in.ChatID)
	if err != nil {
		return nil, s.fail(ctx, "keepalive-sandbox", err)
	}
	ttl, err := seconds("ttl_s", in.Body.TTLS)
	if err != nil {
		return nil, s.fail(ctx, "keepalive-sandbox", err)
	}
	kept, err := s.sandboxes.Keepalive(ctx, chatID, ttl)
	if err != nil {
		return nil, s.fail(ctx, "keepalive-sandbox", err)
	}
	return &sessionOutput{Body: s.render(kept)}, nil
}
