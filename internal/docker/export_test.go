package docker

import (
	"context"
	"time"

	"github.com/sandboxd/sandboxd/internal/execwrap"
)

// SetAgentPing sets how often r pings the sandboxes' agents and how long a channel may
// say nothing before it is closed; before r's first exec.
func SetAgentPing(r *Runtime, every, deadAfter time.Duration) {
	r.agents.ping, r.agents.deadAfter = every, deadAfter
}

// SetFirstStream makes r's new agent channels number their streams from first+1 on.
func SetFirstStream(r *Runtime, first uint32) { r.agents.firstStream = first }

// SetBeforeStart makes r call f between creating a container and starting it, with the
// context of the work that makes it (a create's; the pool's, which DrainPool cancels).
func SetBeforeStart(r *Runtime, f func(ctx context.Context, containerID string)) {
	r.beforeStart = f
}

// KillScript is the script that kills a command: pid, start time, token.
const KillScript = execwrap.KillScript
