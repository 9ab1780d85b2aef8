package docker

import (
	"context"
	"strconv"

	"github.com/google/uuid"
	"github.com/moby/moby/api/types/events"
	"github.com/moby/moby/client"

	"github.com/sandboxd/sandboxd/internal/lifecycle"
)

var _ lifecycle.Watcher = (*Runtime)(nil)

// Watch follows the engine's event stream for this instance's containers and reports each
// that dies (its exit code; OOM when the kernel killed it for memory, which the engine
// announces with an "oom" event just before "die") or is destroyed. Claimed pool
// containers are reported with the chat and session their name carries; unclaimed ones
// with none. connected is called once the engine has answered the subscription: what
// ends from then on is reported. Watch returns when the stream breaks (the engine went
// away: the error wraps sandbox.ErrUnavailable) or ctx ends (ctx's error).
func (r *Runtime) Watch(ctx context.Context, connected func(), ended func(lifecycle.Ending)) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // ends the client's reader
	// The client reports a refused subscription on its error channel only after it has
	// returned: ask the engine first, so that an engine that is away is not taken for a
	// stream that opened and broke at once.
	if _, err := r.cli.Ping(ctx, client.PingOptions{}); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return engineError("events: ping", err)
	}
	res := r.cli.Events(ctx, client.EventsListOptions{Filters: client.Filters{}.
		Add("type", string(events.ContainerEventType)).
		Add("event", string(events.ActionDie), string(events.ActionOOM), string(events.ActionDestroy)).
		Add("label", LabelManagedBy+"="+ManagedBy, LabelInstance+"="+r.instance)})
	connected()
	oom := map[string]bool{} // containers the kernel OOM-killed in, until they die
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-res.Err:
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return engineError("events", err)
		case m := <-res.Messages:
			id := m.Actor.ID
			switch m.Action {
			case events.ActionOOM:
				// Not an end by itself: the kernel may have killed a command, not the
				// sandbox. Its "die" follows if the sandbox went with it.
				oom[id] = true
				continue
			case events.ActionDie, events.ActionDestroy:
			default:
				continue
			}
			e := endingOf(m)
			e.OOM = oom[id]
			delete(oom, id)
			ended(e)
		}
	}
}

// endingOf reads a die or destroy event of one of our containers.
func endingOf(m events.Message) lifecycle.Ending {
	attrs := m.Actor.Attributes
	e := lifecycle.Ending{ContainerID: m.Actor.ID, Removed: m.Action == events.ActionDestroy}
	e.ExitCode, _ = strconv.Atoi(attrs["exitCode"])
	if _, pooled := attrs[LabelPool]; pooled {
		e.ChatID, e.SessionID, _ = claimedName([]string{attrs["name"]})
		return e
	}
	// An unparsable label leaves uuid.Nil: the lifecycle then has no chat to repair, and
	// the reconciler removes the container.
	e.ChatID, _ = uuid.Parse(attrs[LabelChatID])
	e.SessionID, _ = uuid.Parse(attrs[LabelSessionID])
	return e
}
