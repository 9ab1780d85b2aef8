package docker

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/google/uuid"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"

	"github.com/sandboxd/sandboxd/internal/lifecycle"
	"github.com/sandboxd/sandboxd/internal/poolset"
	"github.com/sandboxd/sandboxd/internal/profile"
	"github.com/sandboxd/sandboxd/internal/sandbox"
	"github.com/sandboxd/sandboxd/internal/workspace"
)

// teardownTimeout bounds the removal of a half-made container, which runs even when the
// caller has gone.
const teardownTimeout = 30 * time.Second

// Admit checks a create request without side effects on the chat (it makes the tenant's
// part of the volume root when missing): the agent must have a profile (or fall back to
// the default one), and the workspace folder must be an existing real directory directly
// inside the tenant's part (the volume root itself for the default tenant, else
// <root>/.tenants/<tenant>) with no symbolic link on its way, which the profile's sandbox
// user can write in (else its /workspace would be read-only to it), not another chat's
// derived folder, and not one the caller provided when the profile bounds workspaces
// (images.go). With no folder it returns the chat's derived one, <part>/<chat id>,
// which need not exist yet (Create makes it). Its errors wrap sandbox.ErrInvalid
// (sandbox.ErrUnavailable if the volume root is gone), sandbox.ErrWorkspaceInUse for
// another chat's derived folder, or sandbox.ErrFull when the volume root has less free
// space than Config.MinFreeBytes.
func (r *Runtime) Admit(_ context.Context, tenant string, chatID uuid.UUID, agentID, volumeHostPath string) (string, error) {
	prof, err := r.profiles.Lookup(agentID)
	if err != nil {
		return "", fmt.Errorf("docker: admit: %w", err)
	}
	if err := r.root.CheckFree(r.minFree); err != nil {
		return "", fmt.Errorf("docker: admit: %w", err)
	}
	part, err := r.part(tenant)
	if err != nil {
		return "", fmt.Errorf("docker: admit: %w", err)
	}
	var volume string
	if strings.TrimSpace(volumeHostPath) == "" {
		volume, err = part.CheckCreatableFor(part.Derive(chatID), sandboxUser(prof))
	} else {
		volume, err = part.CheckFor(volumeHostPath, sandboxUser(prof))
	}
	if err == nil {
		err = r.refuseProvided(part, chatID, volume, prof)
	}
	if err != nil {
		return "", fmt.Errorf("docker: admit: %w", err)
	}
	if other, err := uuid.Parse(filepath.Base(volume)); err == nil && other != chatID {
		return "", fmt.Errorf("docker: admit: folder %s is the derived workspace of another chat: %w",
			volume, sandbox.ErrWorkspaceInUse)
	}
	return volume, nil
}

// Resolve returns, without the file system, the folder Admit returns for a request it
// accepts: the chat's derived folder in the tenant's part when the request names none,
// else the folder named, when it is already in the clean absolute form Admit returns and
// the profile takes provided folders. Anything else (no profile, a folder in another
// spelling, a profile that bounds workspaces) is Admit's to answer: false.
func (r *Runtime) Resolve(tenant string, chatID uuid.UUID, agentID, volumeHostPath string) (string, bool) {
	prof, err := r.profiles.Lookup(agentID)
	if err != nil {
		return "", false
	}
	part := r.root
	if tenant != "" && tenant != sandbox.DefaultTenant {
		p, ok := r.root.TenantPart(tenant)
		if !ok {
			return "", false
		}
		part = p
	}
	derived := part.Derive(chatID)
	switch {
	case strings.TrimSpace(volumeHostPath) == "":
		return derived, true
	case volumeHostPath == derived:
		return derived, true
	case prof.WorkspaceMaxBytes > 0 || !filepath.IsAbs(volumeHostPath) || filepath.Clean(volumeHostPath) != volumeHostPath:
		return "", false
	}
	return volumeHostPath, true
}

// part returns the tenant's part of the volume root: the root itself for the default
// tenant (the layout sandboxd always had), else <root>/.tenants/<tenant>, made when
// missing.
func (r *Runtime) part(tenant string) (*workspace.Root, error) {
	if tenant == "" || tenant == sandbox.DefaultTenant {
		return r.root, nil
	}
	return r.root.Tenant(tenant)
}

// partOf returns the part of the volume root that holds path (see part).
func (r *Runtime) partOf(path string) (*workspace.Root, error) {
	return r.part(r.root.TenantOf(path))
}

// Create makes and starts the sandbox of spec and returns its RUNNING session. It checks
// the request again (profile and folder, as Admit does: the folder may have changed since),
// creates the derived folder <root>/<chat id> when that is the workspace and it is missing,
// and checks the folder once more between creating and starting the container, since the
// engine mounts it at start. A bounded workspace (the profile's workspace_max_bytes) gets
// its image mounted on the folder first, made when it has none (images.go). On any
// failure it removes the container it made, the mount and the image and folder it made.
// Errors wrap
// sandbox.ErrInvalid for a refused request, sandbox.ErrFull when the volume root is below
// its free-space floor (checked before anything is made) and sandbox.ErrUnavailable when
// the engine could not make or start the sandbox.
func (r *Runtime) Create(ctx context.Context, spec lifecycle.CreateSpec) (sandbox.Session, error) {
	prof, err := r.profiles.Lookup(spec.AgentID)
	if err != nil {
		return sandbox.Session{}, fmt.Errorf("docker: create: %w", err)
	}
	// Again under the chat's lock: the volume may have filled since Admit.
	if err := r.root.CheckFree(r.minFree); err != nil {
		return sandbox.Session{}, fmt.Errorf("docker: create: %w", err)
	}
	// A pre-started sandbox, when one fits (pool.go); else a cold create.
	if s, ok := r.pool.claim(ctx, spec); ok {
		return s, nil
	}
	part, err := r.part(spec.Tenant)
	if err != nil {
		return sandbox.Session{}, fmt.Errorf("docker: create: %w", err)
	}
	volume, made, err := workspaceOf(part, spec, prof)
	if err == nil {
		err = r.refuseProvided(part, spec.ChatID, volume, prof)
	}
	if err != nil {
		if made {
			r.unmake(volume)
		}
		return sandbox.Session{}, fmt.Errorf("docker: create: %w", err)
	}
	// A bounded workspace: its image is mounted on the folder before the container that
	// binds it is made, and stays locked until then (images.go).
	img, mounted, imgMade, err := r.attach(part, spec.ChatID, volume, prof)
	if err != nil {
		if made {
			r.unmake(volume)
		}
		return sandbox.Session{}, fmt.Errorf("docker: create: %w", err)
	}

	name := ContainerName(spec.ChatID, spec.SessionID)
	hc, err := r.hostConfig(prof, volume)
	if err != nil {
		if made {
			r.unmake(volume)
		}
		return sandbox.Session{}, fmt.Errorf("docker: create %s: %w", name, err)
	}
	cfg := r.containerConfig(spec, prof)
	err = r.withImageCommand(ctx, cfg)
	var created client.ContainerCreateResult
	if err == nil {
		created, err = r.cli.ContainerCreate(ctx, client.ContainerCreateOptions{Name: name, Config: cfg, HostConfig: hc})
	}
	if err != nil {
		if img != nil {
			undoAttach(img, mounted, imgMade)
			img.Unlock()
		}
		if made {
			r.unmake(volume)
		}
		return sandbox.Session{}, fmt.Errorf("docker: create %s: %w: %w", name, sandbox.ErrUnavailable, err)
	}
	if img != nil {
		// From here on the container names the folder: ReleaseMounts sees it in use. A
		// failure below takes the lock again to undo the mount.
		img.Unlock()
	}
	id := created.ID
	fail := func(err error) (sandbox.Session, error) {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), teardownTimeout)
		defer cancel()
		if rmErr := r.remove(ctx, id); rmErr != nil {
			err = errors.Join(err, rmErr)
		}
		if img != nil {
			if img, _, lockErr := part.LockImage(volume, true); lockErr == nil {
				undoAttach(img, mounted, imgMade)
				img.Unlock()
			}
		}
		if made {
			r.unmake(volume)
		}
		return sandbox.Session{}, err
	}
	if r.beforeStart != nil {
		r.beforeStart(ctx, id)
	}
	// The engine mounts the folder at start: look at it again right before.
	if _, err := part.Check(volume); err != nil {
		return fail(fmt.Errorf("docker: create %s: %w", name, err))
	}
	if _, err := r.cli.ContainerStart(ctx, id, client.ContainerStartOptions{}); err != nil {
		return fail(fmt.Errorf("docker: start %s: %w: %w", name, sandbox.ErrUnavailable, err))
	}
	return sandbox.Session{
		ID:             spec.SessionID,
		ChatID:         spec.ChatID,
		ContainerID:    id,
		Status:         sandbox.StatusRunning,
		CreatedAt:      spec.CreatedAt,
		ExpiresAt:      spec.ExpiresAt,
		AgentID:        spec.AgentID,
		VolumeHostPath: spec.VolumeHostPath,
	}, nil
}

// workspaceOf checks the folder of spec in the tenant's part of the volume root and
// returns it, creating the chat's derived folder when that is the one asked for (or none
// was); made says it did.
func workspaceOf(part *workspace.Root, spec lifecycle.CreateSpec, prof profile.Profile) (volume string, made bool, err error) {
	derived := part.Derive(spec.ChatID)
	if p := spec.VolumeHostPath; strings.TrimSpace(p) != "" && p != derived {
		volume, err = part.CheckFor(p, sandboxUser(prof))
		return volume, false, err
	}
	_, statErr := os.Lstat(derived)
	volume, err = part.Ensure(derived, prof.UID, prof.GID)
	return volume, err == nil && errors.Is(statErr, fs.ErrNotExist), err
}

// unmake removes the workspace folder a failed create made, so that a refused or failed
// create leaves nothing behind; only while it is still empty (nothing ran in it).
func (r *Runtime) unmake(volume string) {
	_ = os.Remove(volume)
}

// Stop stops the sandbox gracefully (killing it after the configured timeout), then
// removes the container and unmounts its workspace's image, if bounded; its workspace
// folder (and image) stays. With NoStopGrace it removes the container at once, as
// Delete does. A container that is gone is no
// error. Errors wrap sandbox.ErrUnavailable when the engine cannot be reached, and
// sandbox.ErrInvalid when containerID is not a sandboxd container.
func (r *Runtime) Stop(ctx context.Context, containerID string) error {
	c, err := r.ownedContainer(ctx, containerID)
	if err != nil {
		return gone(err)
	}
	timeout := r.stopTimeout
	if !r.noStopGrace { // else the force-remove below kills it
		if _, err := r.cli.ContainerStop(ctx, containerID, client.ContainerStopOptions{Timeout: &timeout}); err != nil {
			// A conflict: another removal of it is under way; remove waits for that one.
			if err := gone(engineError("stop "+containerID, err)); err != nil && !cerrdefs.IsConflict(err) {
				return err
			}
		}
	}
	if err := r.remove(ctx, containerID); err != nil {
		return err
	}
	r.detachOf(c)
	return nil
}

// Delete removes the sandbox at once, killing it if it runs. A container that is gone is
// no error. Errors are Stop's.
func (r *Runtime) Delete(ctx context.Context, containerID string) error {
	c, err := r.ownedContainer(ctx, containerID)
	if err != nil {
		return gone(err)
	}
	if err := r.remove(ctx, containerID); err != nil {
		return err
	}
	r.detachOf(c)
	return nil
}

// ownedContainer refuses to touch a container that sandboxd did not make, whatever the
// registry says (a missing container is sandbox.ErrNotFound), and returns what the engine
// knows of it.
func (r *Runtime) ownedContainer(ctx context.Context, containerID string) (container.InspectResponse, error) {
	if strings.TrimSpace(containerID) == "" {
		return container.InspectResponse{}, fmt.Errorf("docker: empty container id: %w", sandbox.ErrInvalid)
	}
	res, err := r.cli.ContainerInspect(ctx, containerID, client.ContainerInspectOptions{})
	if err != nil {
		return container.InspectResponse{}, engineError("inspect "+containerID, err)
	}
	if c := res.Container.Config; c == nil || c.Labels[LabelManagedBy] != ManagedBy {
		return container.InspectResponse{}, fmt.Errorf("docker: container %s is not managed by sandboxd: %w", containerID, sandbox.ErrInvalid)
	}
	return res.Container, nil
}

// removeRetry is how often remove asks again while another removal of the container is
// under way.
const removeRetry = 25 * time.Millisecond

// remove force-removes a container; one that is gone is no error. When another removal
// of it is under way (a delete overlapping the sweep, two replicas), the engine answers
// "removal already in progress" (a conflict): remove asks again until the container is
// gone, or removes it itself should the other removal fail, for up to teardownTimeout
// and while ctx lasts. So it does when the container ended by itself while the engine
// was killing it for the removal ("Could not kill running container ..., cannot remove -
// Container ... is not running", seen with a stop's grace overlapping a delete).
func (r *Runtime) remove(ctx context.Context, containerID string) error {
	if r.agents != nil {
		r.agents.forget(containerID)
	}
	ctx, cancel := context.WithTimeout(ctx, teardownTimeout)
	defer cancel()
	for {
		_, err := r.cli.ContainerRemove(ctx, containerID, client.ContainerRemoveOptions{Force: true, RemoveVolumes: true})
		if err == nil {
			return nil
		}
		if !cerrdefs.IsConflict(err) && !strings.Contains(err.Error(), "is not running") || ctx.Err() != nil {
			return gone(engineError("remove "+containerID, err))
		}
		select {
		case <-ctx.Done():
			return gone(engineError("remove "+containerID, err))
		case <-time.After(removeRetry):
		}
	}
}

// Managed lists every container, running or not, that carries this instance's labels,
// except the warm pool's unclaimed ones; a claimed pool container is reported with the
// chat and session its name carries. Its error wraps sandbox.ErrUnavailable when the
// engine cannot be reached.
func (r *Runtime) Managed(ctx context.Context) ([]lifecycle.Container, error) {
	res, err := r.cli.ContainerList(ctx, client.ContainerListOptions{
		All: true,
		Filters: client.Filters{}.Add("label",
			LabelManagedBy+"="+ManagedBy,
			LabelInstance+"="+r.instance),
	})
	if err != nil {
		return nil, engineError("list containers", err)
	}
	out := make([]lifecycle.Container, 0, len(res.Items))
	for _, c := range res.Items {
		// Unparsable ids and times stay zero: the container is ours all the same, and
		// the registry holds no record for the nil chat, so the reconciler removes it.
		lc := lifecycle.Container{
			ID:             c.ID,
			CreatedAt:      time.Unix(c.Created, 0),
			Running:        c.State == container.StateRunning,
			Registry:       c.Labels[LabelRegistry],
			Tenant:         c.Labels[LabelTenant],
			AgentID:        c.Labels[LabelAgentID],
			VolumeHostPath: c.Labels[LabelWorkspace],
		}
		lc.ChatID, _ = uuid.Parse(c.Labels[LabelChatID])
		lc.SessionID, _ = uuid.Parse(c.Labels[LabelSessionID])
		lc.SessionCreatedAt, _ = time.Parse(time.RFC3339Nano, c.Labels[LabelCreatedAt])
		lc.ExpiresAt, _ = time.Parse(time.RFC3339Nano, c.Labels[LabelExpiresAt])
		if pc, ps, pooled, skip := poolContainer(c); skip {
			continue
		} else if pooled {
			// A claimed pool container's labels name its profile, not the chat: its name
			// names chat and session, and its folder is the chat's derived one.
			lc.ChatID, lc.SessionID = pc, ps
			lc.VolumeHostPath = r.root.Derive(pc)
			if lc.AgentID = c.Labels[LabelPool]; lc.AgentID == poolset.DefaultName {
				lc.AgentID = ""
			}
		}
		if lc.VolumeHostPath == "" && len(c.Mounts) == 1 {
			lc.VolumeHostPath = c.Mounts[0].Source // made before the workspace label
		}
		out = append(out, lc)
	}
	return out, nil
}

// sandboxUser is the profile's sandbox user, whom a workspace must let write.
func sandboxUser(p profile.Profile) workspace.User { return workspace.User{UID: p.UID, GID: p.GID} }
