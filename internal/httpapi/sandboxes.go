package httpapi

import (
	"context"
	"fmt"
	"net/http"

	"github.com/danielgtaylor/huma/v2"
	"github.com/google/uuid"

	"github.com/sandboxd/sandboxd/internal/lifecycle"
	"github.com/sandboxd/sandboxd/internal/sandbox"
)

// The collection of all sandboxes: /v1/sandboxes.

// sandboxPage is one page of the list, ordered by chat id.
type sandboxPage struct {
	Items []session `json:"items" nullable:"false"`
	Next  string    `json:"next" doc:"Pass as after= to get the next page; empty on the last page."`
}

type listSandboxesInput struct {
	AgentID string `query:"agent_id" maxLength:"256" doc:"Only sandboxes of this agent."`
	Expired string `query:"expired" enum:"true,false" doc:"Only expired (true) or live (false) sandboxes."`
	After   string `query:"after" maxLength:"64" doc:"A chat id: the page starts after it (the previous page's next)."`
	Limit   int    `query:"limit" minimum:"1" maximum:"1000" default:"100" doc:"Page size."`
}

type listSandboxesOutput struct {
	Body sandboxPage
}

func (s *server) registerSandboxes(api huma.API) {
	huma.Register(api, s.v1(huma.Operation{
		OperationID: "list-sandboxes",
		Method:      http.MethodGet,
		Path:        "/sandboxes",
		Summary:     "List sandboxes",
		Description: "One page of the caller's tenant's sandboxes, ordered by chat id, optionally filtered by agent and expiry.",
		Tags:        []string{"sandbox"},
		Errors:      []int{http.StatusUnprocessableEntity, http.StatusServiceUnavailable},
	}), s.listSandboxes)
}

func (s *server) listSandboxes(ctx context.Context, in *listSandboxesInput) (*listSandboxesOutput, error) {
	filter := lifecycle.ListFilter{AgentID: in.AgentID, Limit: in.Limit + 1}
	if in.After != "" {
		after, err := uuid.Parse(in.After)
		if err != nil {
			return nil, s.fail(ctx, "list-sandboxes",
				fmt.Errorf("after %q is not a chat id: %w", in.After, sandbox.ErrInvalid))
		}
		filter.After = after
	}
	switch in.Expired {
	case "true", "false":
		expired := in.Expired == "true"
		filter.Expired = &expired
		filter.Now = s.now()
	}
	found, err := s.sandboxes.List(ctx, filter)
	if err != nil {
		return nil, s.fail(ctx, "list-sandboxes", err)
	}
	page := sandboxPage{Items: make([]session, 0, min(len(found), in.Limit))}
	// One more than asked for tells whether there is a next page.
	if len(found) > in.Limit {
		found = found[:in.Limit]
		page.Next = found[len(found)-1].ChatID.String()
	}
	for _, ss := range found {
		page.Items = append(page.Items, s.render(ss))
	}
	return &listSandboxesOutput{Body: page}, nil
}
