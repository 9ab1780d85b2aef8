package docker

import (
	"context"
	"time"

	"github.com/moby/moby/client"
)

// Default deadlines of the calls the Runtime makes to the engine (Config.CallTimeout,
// Config.CreateTimeout): a hung engine (one that accepts and never answers) holds no
// use case, job or chat lock longer than that.
const (
	// DefaultCallTimeout bounds a call that only reads or changes the engine's records:
	// info, ping, inspect, list, rename, kill, exec create, inspect and resize, networks.
	DefaultCallTimeout = 10 * time.Second
	// DefaultCreateTimeout bounds a call that makes or tears down a container (create,
	// start, remove) and a stop beyond the time the stop lets the sandbox end.
	DefaultCreateTimeout = time.Minute
)

// deadlines is the engine with a deadline on every call that answers once (streams are
// left alone: an exec's or the agent's attached connection lasts as long as what runs
// there, the stats and the event stream as long as sandboxd reads them).
type deadlines struct {
	engine
	call, create time.Duration
}

func within[T any](ctx context.Context, d time.Duration, f func(context.Context) (T, error)) (T, error) {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	return f(ctx)
}

func (e deadlines) Info(ctx context.Context, o client.InfoOptions) (client.SystemInfoResult, error) {
	return within(ctx, e.call, func(ctx context.Context) (client.SystemInfoResult, error) { return e.engine.Info(ctx, o) })
}

func (e deadlines) Ping(ctx context.Context, o client.PingOptions) (client.PingResult, error) {
	return within(ctx, e.call, func(ctx context.Context) (client.PingResult, error) { return e.engine.Ping(ctx, o) })
}

func (e deadlines) ContainerCreate(ctx context.Context, o client.ContainerCreateOptions) (client.ContainerCreateResult, error) {
	return within(ctx, e.create, func(ctx context.Context) (client.ContainerCreateResult, error) {
		return e.engine.ContainerCreate(ctx, o)
	})
}

func (e deadlines) ContainerStart(ctx context.Context, id string, o client.ContainerStartOptions) (client.ContainerStartResult, error) {
	return within(ctx, e.create, func(ctx context.Context) (client.ContainerStartResult, error) {
		return e.engine.ContainerStart(ctx, id, o)
	})
}

func (e deadlines) ContainerInspect(ctx context.Context, id string, o client.ContainerInspectOptions) (client.ContainerInspectResult, error) {
	return within(ctx, e.call, func(ctx context.Context) (client.ContainerInspectResult, error) {
		return e.engine.ContainerInspect(ctx, id, o)
	})
}

func (e deadlines) ContainerList(ctx context.Context, o client.ContainerListOptions) (client.ContainerListResult, error) {
	return within(ctx, e.call, func(ctx context.Context) (client.ContainerListResult, error) {
		return e.engine.ContainerList(ctx, o)
	})
}

func (e deadlines) ContainerRename(ctx context.Context, id string, o client.ContainerRenameOptions) (client.ContainerRenameResult, error) {
	return within(ctx, e.call, func(ctx context.Context) (client.ContainerRenameResult, error) {
		return e.engine.ContainerRename(ctx, id, o)
	})
}

// ContainerStop gets the time the stop lets the sandbox end on top of the create timeout.
func (e deadlines) ContainerStop(ctx context.Context, id string, o client.ContainerStopOptions) (client.ContainerStopResult, error) {
	d := e.create
	if o.Timeout != nil && *o.Timeout > 0 {
		d += time.Duration(*o.Timeout) * time.Second
	}
	return within(ctx, d, func(ctx context.Context) (client.ContainerStopResult, error) {
		return e.engine.ContainerStop(ctx, id, o)
	})
}

func (e deadlines) ContainerKill(ctx context.Context, id string, o client.ContainerKillOptions) (client.ContainerKillResult, error) {
	return within(ctx, e.call, func(ctx context.Context) (client.ContainerKillResult, error) {
		return e.engine.ContainerKill(ctx, id, o)
	})
}

func (e deadlines) ContainerRemove(ctx context.Context, id string, o client.ContainerRemoveOptions) (client.ContainerRemoveResult, error) {
	return within(ctx, e.create, func(ctx context.Context) (client.ContainerRemoveResult, error) {
		return e.engine.ContainerRemove(ctx, id, o)
	})
}

func (e deadlines) ExecCreate(ctx context.Context, id string, o client.ExecCreateOptions) (client.ExecCreateResult, error) {
	return within(ctx, e.call, func(ctx context.Context) (client.ExecCreateResult, error) {
		return e.engine.ExecCreate(ctx, id, o)
	})
}

func (e deadlines) ExecInspect(ctx context.Context, id string, o client.ExecInspectOptions) (client.ExecInspectResult, error) {
	return within(ctx, e.call, func(ctx context.Context) (client.ExecInspectResult, error) {
		return e.engine.ExecInspect(ctx, id, o)
	})
}

func (e deadlines) ExecResize(ctx context.Context, id string, o client.ExecResizeOptions) (client.ExecResizeResult, error) {
	return within(ctx, e.call, func(ctx context.Context) (client.ExecResizeResult, error) {
		return e.engine.ExecResize(ctx, id, o)
	})
}

func (e deadlines) NetworkCreate(ctx context.Context, name string, o client.NetworkCreateOptions) (client.NetworkCreateResult, error) {
	return within(ctx, e.call, func(ctx context.Context) (client.NetworkCreateResult, error) {
		return e.engine.NetworkCreate(ctx, name, o)
	})
}

func (e deadlines) NetworkInspect(ctx context.Context, id string, o client.NetworkInspectOptions) (client.NetworkInspectResult, error) {
	return within(ctx, e.call, func(ctx context.Context) (client.NetworkInspectResult, error) {
		return e.engine.NetworkInspect(ctx, id, o)
	})
}

func (e deadlines) NetworkRemove(ctx context.Context, id string, o client.NetworkRemoveOptions) (client.NetworkRemoveResult, error) {
	return within(ctx, e.call, func(ctx context.Context) (client.NetworkRemoveResult, error) {
		return e.engine.NetworkRemove(ctx, id, o)
	})
}

func (e deadlines) ImageInspect(ctx context.Context, id string, o ...client.ImageInspectOption) (client.ImageInspectResult, error) {
	return within(ctx, e.call, func(ctx context.Context) (client.ImageInspectResult, error) {
		return e.engine.ImageInspect(ctx, id, o...)
	})
}
