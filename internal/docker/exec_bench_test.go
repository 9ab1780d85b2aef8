package docker_test

import (
	"context"
	"testing"

	"github.com/sandboxd/sandboxd/internal/docker"
	"github.com/sandboxd/sandboxd/internal/lifecycle"
)

// BenchmarkExecTrue measures one command, `true`, through the runtime on each path (no
// HTTP): what the agent's channel and the sandbox's fork and exec cost.
func BenchmarkExecTrue(b *testing.B) {
	for _, p := range []struct {
		name  string
		tweak func(*docker.Config)
	}{
		{"agent", nil},
		{"agent-replica", func(c *docker.Config) { c.SharedSandboxes = true }},
	} {
		b.Run(p.name, func(b *testing.B) {
			e := newEnv(b, p.tweak)
			s := e.create(b, newSpec(""))
			ctx := context.Background()
			for range 10 {
				if _, err := e.rt.Exec(ctx, s.ContainerID, lifecycle.ExecCommand{Cmd: []string{"true"}}); err != nil {
					b.Fatal(err)
				}
			}
			b.ResetTimer()
			for b.Loop() {
				if code, err := e.rt.Exec(ctx, s.ContainerID, lifecycle.ExecCommand{Cmd: []string{"true"}}); err != nil || code != 0 {
					b.Fatal(code, err)
				}
			}
		})
	}
}
