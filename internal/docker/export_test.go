package docker

import "github.com/sandboxd/sandboxd/internal/execwrap"

// SetBeforeStart makes r call f between creating a container and starting it.
func SetBeforeStart(r *Runtime, f func(containerID string)) { r.beforeStart = f }

// KillScript is the script that kills a command: pid, start time, token.
const KillScript = execwrap.KillScript
