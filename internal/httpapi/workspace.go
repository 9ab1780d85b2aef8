package httpapi

import (
	"context"
	"net/http"

	"github.com/danielgtaylor/huma/v2"

	"github.com/sandboxd/sandboxd/internal/sandbox"
)

// The chat's workspace folder, which outlives its sandboxes: /v1/chats/{chat_id}/workspace.

type deleteWorkspaceResult struct {
	ChatID string `json:"chat_id" format:"uuid"`
	Result string `json:"result" enum:"removed,not_found"`
	Path   string `json:"path" doc:"The chat's workspace folder on the host."`
}

type deleteWorkspaceOutput struct {
	Body deleteWorkspaceResult
}

func (s *server) registerWorkspace(api huma.API) {
	huma.Register(api, s.v1(huma.Operation{
		OperationID: "delete-workspace",
		Method:      http.MethodDelete,
		Path:        "/chats/{chat_id}/workspace",
		Summary:     "Delete the chat's workspace folder",
		Description: "Removes the workspace folder made for the chat in the caller's tenant's part of the volume root " +
			"(<volume root>/<chat id> for the default tenant, <volume root>/.tenants/<tenant>/<chat id> for another) and everything in it; " +
			"another tenant's folder is never reached. " +
			"Refused (409) while the chat has a sandbox, expired or not: delete that first. " +
			"Idempotent: a chat without a folder answers 200 with result not_found. " +
			"Folders the caller named at create are not the chat's and are left alone.",
		Tags:   []string{"sandbox"},
		Errors: []int{http.StatusConflict, http.StatusUnprocessableEntity, http.StatusServiceUnavailable},
	}), s.deleteWorkspace)
}

func (s *server) deleteWorkspace(ctx context.Context, in *chatPath) (*deleteWorkspaceOutput, error) {
	chatID, err := sandbox.ParseChatID(in.ChatID)
	if err != nil {
		return nil, s.fail(ctx, "delete-workspace", err)
	}
	res, err := s.sandboxes.DeleteWorkspace(ctx, chatID)
	if err != nil {
		return nil, s.fail(ctx, "delete-workspace", err)
	}
	return &deleteWorkspaceOutput{Body: deleteWorkspaceResult{
		ChatID: res.ChatID.String(), Result: string(res.Result), Path: res.Path,
	}}, nil
}
