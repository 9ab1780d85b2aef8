package docker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/google/uuid"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"

	"github.com/sandboxd/sandboxd/internal/profile"
	"github.com/sandboxd/sandboxd/internal/sandbox"
	"github.com/sandboxd/sandboxd/internal/workspace"
	"github.com/sandboxd/sandboxd/internal/wsimage"
)

// Bounded workspaces (profiles with workspace_max_bytes): the chat's folder <part>/<chat>
// (part: the tenant's part of the volume root, the root itself for the default tenant) is
// a file system image, <part>/.images/<chat>.img, loop-mounted on it from the create
// of a sandbox to its end (Stop, Delete), so that the sandbox and the file API both write
// into it and hit ENOSPC at its size. Between sandboxes the image is not mounted: a mount
// lives only as long as a container uses it, so a crash of sandboxd can leak one only
// until ReleaseMounts (at start-up, and after every reconciliation) finds no container
// on it. The image's lock (workspace.Image) is held from before the mount until the
// container exists, so ReleaseMounts never unmounts a create in flight.

// checkImages says whether this host can bound workspaces: root, mkfs.ext4, mount and
// loop devices, tried for real in <root>/.images.
func checkImages(root *workspace.Root, tools wsimage.Tools) error {
	if err := os.Mkdir(root.ImagesDir(), 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("a profile bounds its workspaces (workspace_max_bytes), but %w", err)
	}
	if err := tools.Check(root.ImagesDir()); err != nil {
		return fmt.Errorf("a profile bounds its workspaces (workspace_max_bytes), but this host cannot enforce it: %w (sandboxd needs root, mkfs.ext4 from e2fsprogs, mount and loop devices; or remove workspace_max_bytes)", err)
	}
	return nil
}

// bounded reports whether the sandbox of prof on volume, for chat, gets the chat's image:
// only the folder derived for the chat is ever bounded (a folder the caller provided
// holds the caller's files, which an image mounted on it would hide).
func bounded(part *workspace.Root, chatID uuid.UUID, volume string, prof profile.Profile) bool {
	if volume != part.Derive(chatID) {
		return false
	}
	return prof.WorkspaceMaxBytes > 0 || part.HasImage(volume)
}

// refuseProvided refuses a caller-provided folder (any but the chat's derived one in the
// tenant's part) for a profile that bounds workspaces, and a provided folder that is
// another chat's bounded workspace under any profile: its files live in an image that the
// other chat's next sandbox mounts over whatever this one would write.
func (r *Runtime) refuseProvided(part *workspace.Root, chatID uuid.UUID, volume string, prof profile.Profile) error {
	if volume == part.Derive(chatID) {
		return nil
	}
	if prof.WorkspaceMaxBytes > 0 {
		return fmt.Errorf("the profile bounds workspaces to %d bytes (workspace_max_bytes), which only the folder sandboxd makes for the chat can be: name no volume_host_path: %w",
			prof.WorkspaceMaxBytes, sandbox.ErrInvalid)
	}
	if part.HasImage(volume) {
		return fmt.Errorf("workspace folder %s is a bounded workspace (its files are in an image) and cannot be provided to another chat: %w",
			volume, sandbox.ErrInvalid)
	}
	return nil
}

// attach mounts the chat's image on volume (making it first when the profile bounds the
// workspace and it has none) and returns the image still locked, with what it did; nil
// when the workspace is not bounded.
func (r *Runtime) attach(part *workspace.Root, chatID uuid.UUID, volume string, prof profile.Profile) (img *workspace.Image, mounted, made bool, err error) {
	if !bounded(part, chatID, volume, prof) {
		return nil, false, false, nil
	}
	img, _, err = part.LockImage(volume, true)
	if err != nil {
		return nil, false, false, err
	}
	mounted, made, err = img.Attach(r.images, workspace.Quota{Bytes: prof.WorkspaceMaxBytes, Files: prof.WorkspaceMaxFiles}, sandboxUser(prof))
	if err != nil {
		img.Unlock()
		return nil, false, false, err
	}
	return img, mounted, made, nil
}

// undoAttach undoes what attach did for a create that failed: the mount it made, and the
// image it made. img must be locked.
func undoAttach(img *workspace.Image, mounted, made bool) {
	if mounted {
		_, _ = img.Detach()
	}
	if made {
		_, _ = img.Remove()
	}
}

// detachOf unmounts the image of the workspace of the container c once it is gone (its
// chat's own folder only, as attach mounted it). A failure is logged: the container is
// gone all the same, and ReleaseMounts unmounts what is left.
func (r *Runtime) detachOf(c container.InspectResponse) {
	if c.Config == nil {
		return
	}
	volume := c.Config.Labels[LabelWorkspace]
	chatID, err := uuid.Parse(c.Config.Labels[LabelChatID])
	if err != nil || volume == "" {
		return
	}
	part, err := r.partOf(volume)
	if err != nil || volume != part.Derive(chatID) || !part.HasImage(volume) {
		return
	}
	img, _, err := part.LockImage(volume, true)
	if err == nil {
		_, err = img.Detach()
		img.Unlock()
	}
	if err != nil {
		r.log.Warn("workspace_unmount_failed", slog.String("path", volume), slog.String("error", err.Error()))
	}
}

// ReleaseMounts unmounts the workspace images that no container of sandboxd uses (any
// instance's, running or not): what a crash left between a create's mount and its
// container, or between a container's end and its unmount. An image whose lock another
// holds (a create in flight) is left alone. It returns the folders it unmounted; with the
// engine unreachable it unmounts nothing (sandbox.ErrUnavailable).
func (r *Runtime) ReleaseMounts(ctx context.Context) ([]string, error) {
	parts, err := r.parts()
	if err != nil {
		return nil, err
	}
	var locked []*workspace.Image
	defer func() {
		for _, img := range locked {
			img.Unlock()
		}
	}()
	for _, part := range parts {
		mounts, err := wsimage.Mounts(part.ImagesDir())
		if err != nil {
			return nil, err
		}
		for _, m := range mounts {
			if filepath.Dir(m.Dir) != part.Dir() {
				continue
			}
			img, ok, err := part.LockImage(m.Dir, false)
			if err != nil || !ok || img.Path() != m.Image {
				if img != nil {
					img.Unlock()
				}
				continue // busy, or not a workspace's image where it belongs
			}
			locked = append(locked, img)
		}
	}
	if len(locked) == 0 {
		return nil, nil
	}
	// Listed once the locks are held: a create that let its lock go has its container.
	res, err := r.cli.ContainerList(ctx, client.ContainerListOptions{
		All:     true,
		Filters: client.Filters{}.Add("label", LabelManagedBy+"="+ManagedBy),
	})
	if err != nil {
		return nil, engineError("list containers", err)
	}
	used := map[string]bool{}
	for _, c := range res.Items {
		used[c.Labels[LabelWorkspace]] = true
		for _, mp := range c.Mounts {
			used[mp.Source] = true
		}
	}
	var released []string
	var errs []error
	for _, img := range locked {
		folder := img.Folder()
		if used[folder] {
			continue
		}
		if ok, err := img.Detach(); err != nil {
			errs = append(errs, err)
		} else if ok {
			released = append(released, folder)
		}
	}
	return released, errors.Join(errs...)
}
