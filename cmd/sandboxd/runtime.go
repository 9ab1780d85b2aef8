package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"

	"go.opentelemetry.io/otel/metric"
	"k8s.io/klog/v2"

	"github.com/sandboxd/sandboxd/internal/config"
	"github.com/sandboxd/sandboxd/internal/docker"
	"github.com/sandboxd/sandboxd/internal/hostfiles"
	"github.com/sandboxd/sandboxd/internal/kube"
	"github.com/sandboxd/sandboxd/internal/lifecycle"
	"github.com/sandboxd/sandboxd/internal/poolset"
	"github.com/sandboxd/sandboxd/internal/webui"
)

// engine is what every runtime gives the lifecycle, and main asks of it itself.
type engine interface {
	lifecycle.Runtime
	lifecycle.Admitter
	lifecycle.Inventory
	lifecycle.Executor
	lifecycle.Terminals
	lifecycle.Watcher
	Ping(ctx context.Context) error
}

// sandboxRuntime is the runtime the configuration chose (runtime: docker or kubernetes),
// wired: its engine, how workspace files are reached, and what only Docker has.
type sandboxRuntime struct {
	engine   engine
	instance string // the labels' instance id
	files    lifecycle.Files
	// workspaces are the workspace folders of the volume root (Docker) or the chats'
	// workspace claims (Kubernetes).
	workspaces lifecycle.Workspaces
	// docker is the Docker runtime, for what it alone offers (egress, bounded workspace
	// mounts, usage samples); nil on Kubernetes.
	docker *docker.Runtime
	// pool is the runtime's warm pool, poolFill its fill for the operator's page.
	pool     warmPool
	poolFill func() []webui.PoolFill
	close    func() error
}

// warmPool is a runtime's warm pool: started once the start-up reconciliation is done,
// drained at shutdown.
type warmPool interface {
	StartPool(ctx context.Context) error
	DrainPool(ctx context.Context) error
}

// openRuntime makes the runtime cfg chooses. registryID is the registry's id, which
// Docker's containers carry; replicas tells that several sandboxd may share the runtime.
func openRuntime(ctx context.Context, log *slog.Logger, cfg config.Config, registryID string, replicas bool, mp metric.MeterProvider) (sandboxRuntime, error) {
	if cfg.Runtime == config.RuntimeKubernetes {
		// client-go logs through klog (to stderr, as plain text): into sandboxd's log.
		klog.SetSlogLogger(log.With(slog.String("component", "client-go")))
		rt, err := kube.New(kube.Config{
			Kubeconfig:     cfg.Kubernetes.Kubeconfig,
			Namespace:      cfg.Kubernetes.Namespace,
			Instance:       cfg.Kubernetes.Instance,
			Registry:       registryID,
			Profiles:       cfg.Profiles,
			StorageClass:   cfg.Kubernetes.StorageClass,
			WorkspaceBytes: cfg.Kubernetes.WorkspaceBytes,
			StopTimeout:    cfg.Kubernetes.StopTimeout,
			MaxLifetime:    cfg.MaxLifetime,
			MeterProvider:  mp,
			Logger:         log,
		})
		if err != nil {
			return sandboxRuntime{}, err
		}
		// Files are read and written by commands inside the sandbox: no host path. A
		// chat's workspace is its volume claim.
		return sandboxRuntime{engine: rt, instance: cfg.Kubernetes.Instance, files: rt, workspaces: rt,
			pool: rt, poolFill: func() []webui.PoolFill { return poolFills(rt.PoolFill()) },
			close: func() error { return nil }}, nil
	}

	if err := os.MkdirAll(cfg.Docker.VolumeRoot, 0o755); err != nil {
		return sandboxRuntime{}, fmt.Errorf("volume root: %w", err)
	}
	agentPath, agentWhy := agentBinary(cfg.Docker.Agent)
	log.InfoContext(ctx, "exec_agent", slog.String("path", agentPath), slog.String("reason", agentWhy))
	rt, err := docker.New(docker.Config{
		AgentPath:     agentPath,
		Host:          cfg.Docker.Host,
		Instance:      cfg.Docker.Instance,
		Registry:      registryID,
		VolumeRoot:    cfg.Docker.VolumeRoot,
		StopTimeout:   cfg.Docker.StopTimeout,
		CallTimeout:   cfg.Docker.CallTimeout,
		CreateTimeout: cfg.Docker.CreateTimeout,
		NoStopGrace:   cfg.Docker.StopTimeout == 0,
		MinFreeBytes:  cfg.Docker.MinFreeBytes,
		Profiles:      cfg.Profiles,
		MeterProvider: mp,
		Logger:        log,
		// Replicas each start an agent of their own in a sandbox, through the engine's
		// exec, rather than share its attached stdin.
		SharedSandboxes: replicas,
	})
	if err != nil {
		return sandboxRuntime{}, err
	}
	profiles := cfg.Profiles
	// Workspace files from the host side (faster than through the agent: BENCHMARKS.md);
	// written files belong to the sandbox's user. /tmp goes through the sandbox's agent
	// when it has one (rt.Files), from the host when not.
	files := hostfiles.New(hostfiles.Config{
		Open:       rt.OpenWorkspace,
		OpenTmp:    rt.OpenTmp,
		MountPoint: profiles.WorkspaceMount,
		Owner: func(agentID string) *hostfiles.Owner {
			uid, gid := profiles.SandboxUser(agentID)
			return &hostfiles.Owner{UID: uid, GID: gid}
		},
	})
	return sandboxRuntime{engine: rt, instance: cfg.Docker.Instance, files: rt.Files(files, docker.FilesHost), workspaces: rt, docker: rt,
		pool: rt, poolFill: func() []webui.PoolFill { return poolFills(rt.PoolFill()) }, close: rt.Close}, nil
}

// checkRuntimes refuses to start on a runtime that lacks what a profile needs (an OCI
// runtime such as gVisor's runsc the Docker engine does not have).
func (r sandboxRuntime) checkRuntimes(ctx context.Context) error {
	if r.docker == nil {
		return nil // a missing RuntimeClass fails the Pod's create with the cluster's reason
	}
	return r.docker.CheckRuntimes(ctx)
}

// releaseMounts unmounts the bounded workspaces no sandbox uses (Docker only).
func (r sandboxRuntime) releaseMounts(ctx context.Context) ([]string, error) {
	if r.docker == nil {
		return nil, nil
	}
	return r.docker.ReleaseMounts(ctx)
}

// startPool starts the warm pools (profiles with pool.min > 0), removing what a previous
// run left first, and drainPool removes them.
func (r sandboxRuntime) startPool(ctx context.Context) error { return r.pool.StartPool(ctx) }

func (r sandboxRuntime) drainPool(ctx context.Context) error { return r.pool.DrainPool(ctx) }

// poolFills are a runtime's pool fills for the operator's page.
func poolFills(fills []poolset.Fill) []webui.PoolFill {
	out := make([]webui.PoolFill, 0, len(fills))
	for _, f := range fills {
		out = append(out, webui.PoolFill(f))
	}
	return out
}
