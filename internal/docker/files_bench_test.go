package docker_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"testing"

	"github.com/sandboxd/sandboxd/internal/docker"
	"github.com/sandboxd/sandboxd/internal/lifecycle"
	"github.com/sandboxd/sandboxd/internal/profile"
)

// BenchmarkFiles measures an upload and a download of the same file on each way, in the
// workspace and in /tmp (BENCHMARKS.md, files).
func BenchmarkFiles(b *testing.B) {
	tmp := true
	for _, way := range []string{"host", "agent"} {
		for _, size := range []int{4 << 10, 1 << 20, 16 << 20} {
			for _, area := range []string{"/workspace", "/tmp"} {
				b.Run(fmt.Sprintf("%s/%s/%dKiB", way, area[1:], size>>10), func(b *testing.B) {
					e := newEnv(b, func(c *docker.Config) {
						c.Profiles = testProfiles(b, profile.Agents{Default: profile.Spec{FilesTmp: &tmp}})
					})
					s := e.create(b, newSpec(""))
					var files lifecycle.Files = hostFiles(e)
					if way == "agent" {
						files = e.rt.Files(nil, docker.FilesAgent)
					}
					data := bytes.Repeat([]byte("x"), size)
					ctx := context.Background()
					name := area + "/bench.bin"
					// Warm: the agent's channel.
					if _, err := files.WriteFile(ctx, s, name, bytes.NewReader(data), int64(size)); err != nil {
						b.Fatal(err)
					}
					b.SetBytes(int64(2 * size))
					b.ResetTimer()
					for b.Loop() {
						if _, err := files.WriteFile(ctx, s, name, bytes.NewReader(data), int64(size)); err != nil {
							b.Fatal(err)
						}
						rc, _, err := files.OpenFile(ctx, s, name)
						if err != nil {
							b.Fatal(err)
						}
						if n, err := io.Copy(io.Discard, rc); err != nil || n != int64(size) {
							b.Fatal(n, err)
						}
						_ = rc.Close()
					}
				})
			}
		}
	}
}
