package lifecycle

import (
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/sandboxd/sandboxd/internal/sandbox"
)

// Event is something that happened to a chat's sandbox, as an operator follows it.
type Event struct {
	At     time.Time
	Tenant string // the sandbox's tenant (sandbox.DefaultTenant for the default one)
	ChatID uuid.UUID
	Type   EventType
	Detail string // what else there is to say ("exit 0 in 12ms: ls", "oom"), short
}

// EventType names what happened.
type EventType string

// The events the use cases report.
const (
	EventCreated      EventType = "created"
	EventReused       EventType = "reused"
	EventReplaced     EventType = "replaced"
	EventCreateFailed EventType = "create_failed"
	EventDeleted      EventType = "deleted"
	EventDied         EventType = "died"
	EventCleaned      EventType = "cleaned"
	EventKeptAlive    EventType = "kept_alive"
	EventExec         EventType = "exec"
	EventTerminal     EventType = "terminal"
)

// EventSink hears the use cases' events (Config.Events), e.g. to show an operator what
// just happened. Record is called on the use case's path: it must not block.
type EventSink interface {
	Record(Event)
}

// maxEventDetail bounds an event's detail (a command line may be long).
const maxEventDetail = 200

// event reports an event of session's chat to the sink, if there is one.
func (s *Service) event(session sandbox.Session, typ EventType, detail string) {
	s.eventOf(session.TenantOf(), session.ChatID, typ, detail)
}

func (s *Service) eventOf(tenant string, chatID uuid.UUID, typ EventType, detail string) {
	if s.events == nil {
		return
	}
	if len(detail) > maxEventDetail {
		detail = strings.ToValidUTF8(detail[:maxEventDetail], "") + "…"
	}
	s.events.Record(Event{At: s.clock.Now(), Tenant: tenant, ChatID: chatID, Type: typ, Detail: detail})
}
