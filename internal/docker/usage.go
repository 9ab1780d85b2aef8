package docker

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"

	"github.com/sandboxd/sandboxd/internal/poolset"
)

// Usage is one sample of a sandbox's resource use, as the engine reports it.
type Usage struct {
	At         time.Time
	CPUNanos   uint64 // CPU time the container used since it started
	SystemCPU  uint64 // the host's CPU time at the same moment (the base of a percentage)
	OnlineCPUs uint32
	Memory     uint64 // bytes in use, less the page cache the kernel may drop
	MemLimit   uint64
}

// maxStatsBody bounds the engine's answer to one stats call.
const maxStatsBody = 1 << 20

// Usage takes one sample of the container's resource use (the engine's stats, one shot,
// without waiting for a second sample). Errors as every engine call's.
func (r *Runtime) Usage(ctx context.Context, containerID string) (Usage, error) {
	res, err := r.cli.ContainerStats(ctx, containerID, client.ContainerStatsOptions{})
	if err != nil {
		return Usage{}, engineError("stats of "+containerID, err)
	}
	defer res.Body.Close()
	var st container.StatsResponse
	if err := json.NewDecoder(io.LimitReader(res.Body, maxStatsBody)).Decode(&st); err != nil {
		return Usage{}, fmt.Errorf("docker: stats of %s: %w", containerID, err)
	}
	mem := st.MemoryStats.Usage
	if cache := st.MemoryStats.Stats["inactive_file"]; cache < mem {
		mem -= cache // as docker stats shows it
	}
	return Usage{
		At: st.Read, CPUNanos: st.CPUStats.CPUUsage.TotalUsage, SystemCPU: st.CPUStats.SystemUsage,
		OnlineCPUs: st.CPUStats.OnlineCPUs, Memory: mem, MemLimit: st.MemoryStats.Limit,
	}, nil
}

// PoolFill is how full one profile's warm pool is.
type PoolFill = poolset.Fill

// PoolFill reports every pooled profile's fill, in configuration order.
func (r *Runtime) PoolFill() []PoolFill {
	if r.pool == nil {
		return nil
	}
	return r.pool.Fill()
}
