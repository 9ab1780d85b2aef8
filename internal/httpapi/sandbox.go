package httpapi

import (
	"context"
	"net/http"
	"reflect"
	"time"

	"github.com/danielgtaylor/huma/v2"

	"github.com/sandboxd/sandboxd/internal/lifecycle"
	"github.com/sandboxd/sandboxd/internal/sandbox"
)

// The sandbox of one chat: /v1/chats/{chat_id}/sandbox. Later routes of the same
// sandbox (exec, files, keepalive) go under this path.

// session is a chat's sandbox as the API shows it.
type session struct {
	SessionID      string    `json:"session_id" format:"uuid" doc:"New for every sandbox of the chat."`
	ChatID         string    `json:"chat_id" format:"uuid" doc:"The chat, in canonical form."`
	ContainerID    string    `json:"container_id" doc:"The runtime's id of the sandbox container."`
	Status         string    `json:"status" example:"RUNNING"`
	CreatedAt      time.Time `json:"created_at"`
	ExpiresAt      time.Time `json:"expires_at"`
	AgentID        string    `json:"agent_id" doc:"The agent the sandbox was made for; empty when none was given."`
	VolumeHostPath string    `json:"volume_host_path" doc:"The host folder mounted as the workspace; empty when none."`
	Expired        bool      `json:"expired" doc:"Whether the sandbox's TTL has passed (it is replaced on the next PUT)."`
}

// sandboxResult is the answer to PUT: the chat's live sandbox and how it came to be.
// It repeats session's fields rather than embedding it: huma documents no fields of an
// embedded unexported struct.
type sandboxResult struct {
	SessionID      string    `json:"session_id" format:"uuid" doc:"New for every sandbox of the chat."`
	ChatID         string    `json:"chat_id" format:"uuid" doc:"The chat, in canonical form."`
	ContainerID    string    `json:"container_id" doc:"The runtime's id of the sandbox container."`
	Status         string    `json:"status" example:"RUNNING"`
	CreatedAt      time.Time `json:"created_at"`
	ExpiresAt      time.Time `json:"expires_at"`
	AgentID        string    `json:"agent_id" doc:"The agent the sandbox was made for; empty when none was given."`
	VolumeHostPath string    `json:"volume_host_path" doc:"The host folder mounted as the workspace; empty when none."`
	Expired        bool      `json:"expired" doc:"Whether the sandbox's TTL has passed; false right after a PUT."`
	Result         string    `json:"result" enum:"created,reused,replaced" doc:"created or replaced (201), reused (200)."`
}

// createSandboxBody is the body of PUT; both fields are optional.
type createSandboxBody struct {
	AgentID        string `json:"agent_id,omitempty" maxLength:"256" doc:"The agent the sandbox is for."`
	VolumeHostPath string `json:"volume_host_path,omitempty" maxLength:"4096" doc:"The host folder to mount as the workspace (Docker runtime; omitted: a folder of the chat's own under the volume root). On the Kubernetes runtime the workspace is always the chat's own volume claim: omit it; any value is refused with 422."`
}

// deleteSandboxResult is the answer to DELETE. The ids are empty when there was nothing
// to delete.
type deleteSandboxResult struct {
	ChatID      string `json:"chat_id" format:"uuid"`
	Result      string `json:"result" enum:"deleted,not_found"`
	SessionID   string `json:"session_id"`
	ContainerID string `json:"container_id"`
}

type chatPath struct {
	ChatID string `path:"chat_id" maxLength:"64" doc:"The chat's UUID, in any spelling (hyphens or not, any case, braces, urn)." example:"0b6f1f7e-3c1a-4d0e-9a61-6f0d2c8e4b1a"`
}

type putSandboxInput struct {
	ChatID string `path:"chat_id" maxLength:"64" doc:"The chat's UUID, in any spelling (hyphens or not, any case, braces, urn)." example:"0b6f1f7e-3c1a-4d0e-9a61-6f0d2c8e4b1a"`
	Body   *createSandboxBody
}

type putSandboxOutput struct {
	Status int
	Body   sandboxResult
}

type sessionOutput struct {
	Body session
}

type deleteSandboxOutput struct {
	Body deleteSandboxResult
}

func (s *server) registerSandbox(api huma.API) {
	const path = "/chats/{chat_id}/sandbox"
	registry := api.OpenAPI().Components.Schemas
	resultSchema := registry.Schema(reflect.TypeFor[sandboxResult](), true, "sandboxResult")

	huma.Register(api, s.v1(huma.Operation{
		OperationID: "put-sandbox",
		Method:      http.MethodPut,
		Path:        path,
		Summary:     "Create or reuse the chat's sandbox",
		Description: "Returns the chat's live sandbox when it was made for the same agent and folder (200, reused); " +
			"makes one when the chat has none (201, created) or its sandbox has expired (201, replaced). " +
			"A live sandbox for another agent or folder is a conflict (409) and changes nothing. " +
			"A folder that is another chat's (named as another chat id, or used by another chat's sandbox) is 409 workspace_in_use, nothing made. " +
			"A chat whose sandbox belongs to another tenant is answered as one without a sandbox of the caller's: " +
			"404 not_found, nothing changed (chat ids are global, so that chat id cannot be the caller's). " +
			"A new sandbox past the tenant's max_sandboxes is refused with 429 limit_exceeded and Retry-After.",
		Tags:          []string{"sandbox"},
		DefaultStatus: http.StatusCreated,
		Responses: map[string]*huma.Response{
			"200": {
				Description: "The chat's live sandbox, reused.",
				Content:     map[string]*huma.MediaType{"application/json": {Schema: resultSchema}},
			},
			"201": {Description: "A new sandbox, created or replacing an expired one."},
		},
		Errors: []int{http.StatusNotFound, http.StatusConflict, http.StatusRequestEntityTooLarge,
			http.StatusUnsupportedMediaType, http.StatusUnprocessableEntity, http.StatusTooManyRequests,
			http.StatusServiceUnavailable},
	}), s.putSandbox)

	huma.Register(api, s.v1(huma.Operation{
		OperationID: "get-sandbox",
		Method:      http.MethodGet,
		Path:        path,
		Summary:     "Get the chat's sandbox",
		Description: "Returns the chat's sandbox, expired or not; 404 when it has none (or it is another tenant's).",
		Tags:        []string{"sandbox"},
		Errors:      []int{http.StatusNotFound, http.StatusUnprocessableEntity, http.StatusServiceUnavailable},
	}), s.getSandbox)

	huma.Register(api, s.v1(huma.Operation{
		OperationID: "delete-sandbox",
		Method:      http.MethodDelete,
		Path:        path,
		Summary:     "Delete the chat's sandbox",
		Description: "Removes the chat's sandbox at once and forgets it. Idempotent: a chat with none " +
			"(or whose sandbox is another tenant's, which is left alone) answers 200 with result not_found.",
		Tags:   []string{"sandbox"},
		Errors: []int{http.StatusUnprocessableEntity, http.StatusServiceUnavailable},
	}), s.deleteSandbox)
}

func (s *server) putSandbox(ctx context.Context, in *putSandboxInput) (*putSandboxOutput, error) {
	chatID, err := sandbox.ParseChatID(in.ChatID)
	if err != nil {
		return nil, s.fail(ctx, "put-sandbox", err)
	}
	req := lifecycle.CreateRequest{ChatID: chatID}
	if in.Body != nil {
		req.AgentID, req.VolumeHostPath = in.Body.AgentID, in.Body.VolumeHostPath
	}
	found, outcome, err := s.sandboxes.Create(ctx, req)
	if err != nil {
		return nil, s.fail(ctx, "put-sandbox", err)
	}
	status := http.StatusCreated
	if outcome == lifecycle.Reused {
		status = http.StatusOK
	}
	return &putSandboxOutput{
		Status: status,
		Body:   withResult(s.render(found), outcome),
	}, nil
}

func (s *server) getSandbox(ctx context.Context, in *chatPath) (*sessionOutput, error) {
	chatID, err := sandbox.ParseChatID(in.ChatID)
	if err != nil {
		return nil, s.fail(ctx, "get-sandbox", err)
	}
	found, err := s.sandboxes.Get(ctx, chatID)
	if err != nil {
		return nil, s.fail(ctx, "get-sandbox", err)
	}
	return &sessionOutput{Body: s.render(found)}, nil
}

func (s *server) deleteSandbox(ctx context.Context, in *chatPath) (*deleteSandboxOutput, error) {
	chatID, err := sandbox.ParseChatID(in.ChatID)
	if err != nil {
		return nil, s.fail(ctx, "delete-sandbox", err)
	}
	res, err := s.sandboxes.Delete(ctx, chatID)
	if err != nil {
		return nil, s.fail(ctx, "delete-sandbox", err)
	}
	out := deleteSandboxResult{ChatID: res.ChatID.String(), Result: string(res.Result), ContainerID: res.ContainerID}
	if res.Result == lifecycle.Deleted {
		out.SessionID = res.SessionID.String()
	}
	return &deleteSandboxOutput{Body: out}, nil
}

// render shows a domain session, judging its expiry now.
func (s *server) render(ss sandbox.Session) session {
	return session{
		SessionID:      ss.ID.String(),
		ChatID:         ss.ChatID.String(),
		ContainerID:    ss.ContainerID,
		Status:         string(ss.Status),
		CreatedAt:      ss.CreatedAt.UTC(),
		ExpiresAt:      ss.ExpiresAt.UTC(),
		AgentID:        ss.AgentID,
		VolumeHostPath: ss.VolumeHostPath,
		Expired:        ss.Expired(s.now()),
	}
}

func withResult(ss session, outcome lifecycle.Outcome) sandboxResult {
	return sandboxResult{
		SessionID: ss.SessionID, ChatID: ss.ChatID, ContainerID: ss.ContainerID, Status: ss.Status,
		CreatedAt: ss.CreatedAt, ExpiresAt: ss.ExpiresAt, AgentID: ss.AgentID,
		VolumeHostPath: ss.VolumeHostPath, Expired: ss.Expired, Result: string(outcome),
	}
}
