package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/google/uuid"
	"github.com/moby/moby/client"

	"github.com/sandboxd/sandboxd/internal/docker"
	"github.com/sandboxd/sandboxd/internal/lifecycle"
	"github.com/sandboxd/sandboxd/internal/profile"
)

// direct makes sandboxes straight through the Engine API, with the very options
// sandboxd's runtime sends (docker.Runtime.CreateOptions): the baseline.
type direct struct {
	cli        *client.Client
	rt         *docker.Runtime // only for CreateOptions
	instance   string
	volumeRoot string
}

func newDirect(cli *client.Client, instance, volumeRoot, image string) (*direct, error) {
	profiles, err := profile.New(profile.Agents{Default: profile.Spec{Image: image}})
	if err != nil {
		return nil, err
	}
	rt, err := docker.New(docker.Config{Instance: instance, VolumeRoot: volumeRoot, Profiles: profiles})
	if err != nil {
		return nil, err
	}
	return &direct{cli: cli, rt: rt, instance: instance, volumeRoot: volumeRoot}, nil
}

func (d *direct) close() error { return d.rt.Close() }

// prepare returns the create options of a new chat's sandbox, with its workspace folder
// made as sandboxd makes it (owned by the sandbox user): outside the timed part.
func (d *direct) prepare(chatID uuid.UUID, expires time.Time) (client.ContainerCreateOptions, lifecycle.CreateSpec, error) {
	spec := lifecycle.CreateSpec{SessionID: uuid.New(), ChatID: chatID, CreatedAt: time.Now(), ExpiresAt: expires}
	volume := filepath.Join(d.volumeRoot, chatID.String())
	if err := os.MkdirAll(volume, 0o700); err != nil {
		return client.ContainerCreateOptions{}, spec, err
	}
	if err := os.Chown(volume, 1000, 1000); err != nil {
		return client.ContainerCreateOptions{}, spec, err
	}
	opts, err := d.rt.CreateOptions(spec, volume)
	return opts, spec, err
}

// createStart creates and starts the container of opts and returns its id; on a failed
// start it removes it.
func (d *direct) createStart(ctx context.Context, opts client.ContainerCreateOptions) (string, error) {
	created, err := d.cli.ContainerCreate(ctx, opts)
	if err != nil {
		return "", fmt.Errorf("engine: create: %w", err)
	}
	if _, err := d.cli.ContainerStart(ctx, created.ID, client.ContainerStartOptions{}); err != nil {
		_ = removeContainer(context.WithoutCancel(ctx), d.cli, created.ID)
		return "", fmt.Errorf("engine: start: %w", err)
	}
	return created.ID, nil
}

// removeContainer force-removes id; one that is gone is fine.
func removeContainer(ctx context.Context, cli *client.Client, id string) error {
	_, err := cli.ContainerRemove(ctx, id, client.ContainerRemoveOptions{Force: true, RemoveVolumes: true})
	if err != nil && !cerrdefs.IsNotFound(err) {
		return fmt.Errorf("engine: remove %s: %w", id, err)
	}
	return nil
}

// execTrue runs `true` in the container as the sandbox's default user and succeeds when
// it exited 0: the proof that a container is exec-ready.
func execTrue(ctx context.Context, cli *client.Client, id string) error {
	created, err := cli.ExecCreate(ctx, id, client.ExecCreateOptions{
		Cmd: []string{"true"}, AttachStdout: true, AttachStderr: true,
	})
	if err != nil {
		return fmt.Errorf("engine: exec create: %w", err)
	}
	att, err := cli.ExecAttach(ctx, created.ID, client.ExecAttachOptions{})
	if err != nil {
		return fmt.Errorf("engine: exec attach: %w", err)
	}
	_, err = io.Copy(io.Discard, att.Reader)
	att.Close()
	if err != nil {
		return fmt.Errorf("engine: exec read: %w", err)
	}
	for {
		res, err := cli.ExecInspect(ctx, created.ID, client.ExecInspectOptions{})
		if err != nil {
			return fmt.Errorf("engine: exec inspect: %w", err)
		}
		if !res.Running {
			if res.ExitCode != 0 {
				return fmt.Errorf("engine: exec true: exit code %d", res.ExitCode)
			}
			return nil
		}
		time.Sleep(time.Millisecond)
	}
}

// instanceContainers lists the containers, running or not, whose instance label is
// instance.
func instanceContainers(ctx context.Context, cli *client.Client, instance string) ([]string, error) {
	res, err := cli.ContainerList(ctx, client.ContainerListOptions{
		All:     true,
		Filters: client.Filters{}.Add("label", docker.LabelInstance+"="+instance),
	})
	if err != nil {
		return nil, fmt.Errorf("engine: list: %w", err)
	}
	ids := make([]string, 0, len(res.Items))
	for _, c := range res.Items {
		ids = append(ids, c.ID)
	}
	return ids, nil
}

// untilNone polls the engine every poll until it lists no container of instance, and
// returns when it first listed none.
func untilNone(ctx context.Context, cli *client.Client, instance string, deadline time.Time, poll time.Duration) (time.Time, error) {
	for {
		left, err := instanceContainers(ctx, cli, instance)
		if err != nil {
			return time.Time{}, err
		}
		if len(left) == 0 {
			return time.Now(), nil
		}
		if time.Now().After(deadline) {
			return time.Time{}, fmt.Errorf("%d containers of %s left at the deadline", len(left), instance)
		}
		time.Sleep(poll)
	}
}

// removeRun force-removes every container whose instance label starts with prefix: all
// the bench made in this run, whoever made it.
func removeRun(ctx context.Context, cli *client.Client, prefix string) (int, error) {
	res, err := cli.ContainerList(ctx, client.ContainerListOptions{
		All:     true,
		Filters: client.Filters{}.Add("label", docker.LabelInstance),
	})
	if err != nil {
		return 0, fmt.Errorf("engine: list: %w", err)
	}
	var ids []string
	for _, c := range res.Items {
		if strings.HasPrefix(c.Labels[docker.LabelInstance], prefix) {
			ids = append(ids, c.ID)
		}
	}
	return len(ids), parallel(ctx, len(ids), 8, func(ctx context.Context, i int) error {
		return removeContainer(ctx, cli, ids[i])
	})
}

// parallel runs fn(0..n-1) with at most width at once and returns the first error.
func parallel(ctx context.Context, n, width int, fn func(ctx context.Context, i int) error) error {
	sem := make(chan struct{}, max(1, width))
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
	)
	for i := range n {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			if err := fn(ctx, i); err != nil {
				mu.Lock()
				if first == nil {
					first = err
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return first
}
