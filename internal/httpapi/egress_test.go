package httpapi_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/sandboxd/sandboxd/client"
	"github.com/sandboxd/sandboxd/internal/egress"
	"github.com/sandboxd/sandboxd/internal/httpapi"
)

// The egress route lists what the proxy says of the chat's current session, newest
// first as given; a chat without a sandbox is 404.
func TestEgressDenials(t *testing.T) {
	var asked [2]string
	when := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	f := newFixture(t, func(cfg *httpapi.Config) {
		cfg.Denials = func(chatID, sessionID string) []egress.Denial {
			asked = [2]string{chatID, sessionID}
			return []egress.Denial{{Time: when, SessionID: sessionID, Destination: "example.com:443",
				Reason: egress.ReasonNotAllowed, Detail: "no allow rule names example.com port 443"}}
		}
	})
	ctx := context.Background()
	chat := uuid.NewString()
	s, _, err := f.client.Create(ctx, chat, client.CreateBody{})
	if err != nil {
		t.Fatal(err)
	}
	got, err := f.client.EgressDenials(ctx, chat)
	if err != nil {
		t.Fatal(err)
	}
	if asked != [2]string{chat, s.SessionID} {
		t.Errorf("the proxy was asked for %v, want the chat's current session", asked)
	}
	if len(got) != 1 || got[0].Reason != "not_allowed" || got[0].Destination != "example.com:443" || !got[0].Time.Equal(when) {
		t.Errorf("denials %+v", got)
	}
	if _, err := f.client.EgressDenials(ctx, uuid.NewString()); !errors.Is(err, client.ErrNotFound) {
		t.Errorf("a chat without a sandbox: %v", err)
	}
}
