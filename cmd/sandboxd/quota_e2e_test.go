package main

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	dockerclient "github.com/moby/moby/client"
	"golang.org/x/sys/unix"

	"github.com/sandboxd/sandboxd/client"
	"github.com/sandboxd/sandboxd/internal/testing/loopfs"
	"github.com/sandboxd/sandboxd/internal/testing/waitfor"
	"github.com/sandboxd/sandboxd/internal/wsimage"
)

// freeBytes is what the file system of dir still has free.
func freeBytes(t *testing.T, dir string) int64 {
	t.Helper()
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	return int64(st.Bavail) * st.Bsize
}

// mountedImage is the image mounted on folder ("" when none), as /proc/self/mountinfo says.
func mountedImage(t *testing.T, vol, folder string) string {
	t.Helper()
	img, err := wsimage.MountedOn(filepath.Join(vol, ".images"), folder)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// A profile's workspace_max_bytes, through the binary on a small volume root of its own
// (a loop-mounted file system, so that its free space is this test's alone): a sandbox
// that writes past it gets ENOSPC and the volume root loses no more than the bound; an
// upload past it is 507 full and leaves nothing; the file count is bounded too; a folder
// the caller provides is refused; a SIGKILL leaks no mount (the next start unmounts the
// image of a sandbox removed meanwhile and keeps the live one's); the image outlives the
// sandbox, unmounted, and goes with DELETE .../workspace.
func TestWorkspaceQuota(t *testing.T) {
	t.Parallel()
	const bound = 32 << 20
	w := newWorld(t, "SANDBOXD_AGENTS_DEFAULT_WORKSPACE_MAX_BYTES=32m", "SANDBOXD_AGENTS_DEFAULT_WORKSPACE_MAX_FILES=200",
		"SANDBOXD_DOCKER_MIN_FREE_BYTES=67108864") // the volume root is 512 MiB
	vol := loopfs.Mount(t, 512<<20)
	w.cfg.VolumeRoot = vol
	srv := w.start()
	ctx := context.Background()

	chatA := newChat()
	folderA, imageA := filepath.Join(vol, chatA), filepath.Join(vol, ".images", chatA+".img")
	free0 := freeBytes(t, vol)
	a, _, err := srv.api.Create(ctx, chatA, client.CreateBody{})
	if err != nil {
		t.Fatal(err)
	}
	if got := mountedImage(t, vol, folderA); got != imageA {
		t.Fatalf("mounted on %s: %q, want %s", folderA, got, imageA)
	}

	// Inside the sandbox: ENOSPC at the bound, and the command fails.
	res, err := srv.api.Exec(ctx, chatA, client.ExecBody{Cmd: []string{"sh", "-c", "dd if=/dev/zero of=/workspace/big bs=1M count=100"}})
	if err != nil || res.ExitCode == 0 || !strings.Contains(res.Stderr, "No space left on device") {
		t.Fatalf("writing 100 MiB into a 32 MiB workspace: %+v, %v; want ENOSPC and a failure", res, err)
	}
	res, err = srv.api.Exec(ctx, chatA, client.ExecBody{Cmd: []string{"sh", "-c", "stat -c %s /workspace/big"}})
	if n, _ := strconv.ParseInt(strings.TrimSpace(res.Stdout), 10, 64); err != nil || n <= 16<<20 || n > bound {
		t.Errorf("the sandbox wrote %q bytes (%v), want between 16 MiB and the bound", res.Stdout, err)
	}
	if lost := free0 - freeBytes(t, vol); lost > bound+(1<<20) {
		t.Errorf("the volume root lost %d bytes to a workspace bounded to %d", lost, bound)
	}
	if res, err := http.Get(srv.base + "/readyz"); err != nil || res.StatusCode != http.StatusOK {
		t.Errorf("sandboxd not ready with a full workspace: %v, %v", res, err)
	} else {
		res.Body.Close()
	}

	// The file API writes into the same bound: 507 full, nothing left of the upload.
	_, err = srv.api.Upload(ctx, chatA, "more.bin", bytes.NewReader(make([]byte, 4<<20)))
	var apiErr *client.Error
	if !errors.Is(err, client.ErrFull) || !errors.As(err, &apiErr) || apiErr.Status != 507 {
		t.Fatalf("upload into a full workspace: %v, want 507 full", err)
	}
	if files, err := srv.api.ListFiles(ctx, chatA, "/"); err != nil || len(files) != 1 {
		t.Errorf("workspace after the refused upload: %+v, %v; want big alone", files, err)
	}
	if res, err := srv.api.Exec(ctx, chatA, client.ExecBody{Cmd: []string{"rm", "/workspace/big"}}); err != nil || res.ExitCode != 0 {
		t.Fatalf("rm: %+v, %v", res, err)
	}
	if _, err := srv.api.Upload(ctx, chatA, "more.bin", bytes.NewReader(make([]byte, 4<<20))); err != nil {
		t.Fatalf("upload once room is freed: %v", err)
	}
	if _, err := srv.api.Upload(ctx, chatA, "huge.bin", bytes.NewReader(make([]byte, 40<<20))); !errors.Is(err, client.ErrFull) {
		t.Errorf("40 MiB upload into 32 MiB: %v, want full", err)
	}

	// Files and folders are bounded as well (about 200: mkfs rounds to its inode tables).
	res, err = srv.api.Exec(ctx, chatA, client.ExecBody{Cmd: []string{"sh", "-c",
		"mkdir /workspace/many && i=0; while touch /workspace/many/$i 2>/dev/null; do i=$((i+1)); [ $i -lt 2000 ] || break; done; echo $i"}})
	if n, _ := strconv.Atoi(strings.TrimSpace(res.Stdout)); err != nil || n < 100 || n >= 1000 {
		t.Errorf("files made in a workspace bounded to 200: %q, %v", res.Stdout, err)
	}
	if _, err := srv.api.Exec(ctx, chatA, client.ExecBody{Cmd: []string{"rm", "-r", "/workspace/many"}}); err != nil {
		t.Fatal(err)
	}

	// A folder the caller provides cannot be bounded: refused, nothing made.
	provided := filepath.Join(vol, "provided")
	if err := os.Mkdir(provided, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(provided, 1000, 1000); err != nil {
		t.Fatal(err)
	}
	if _, _, err := srv.api.Create(ctx, newChat(), client.CreateBody{VolumeHostPath: provided}); !errors.Is(err, client.ErrInvalid) {
		t.Errorf("create on a provided folder under a bound: %v, want invalid", err)
	}

	// Chat B, then a crash; B's sandbox is removed while sandboxd is down.
	chatB := newChat()
	folderB := filepath.Join(vol, chatB)
	b, _, err := srv.api.Create(ctx, chatB, client.CreateBody{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := srv.api.Upload(ctx, chatB, "kept", strings.NewReader("b's")); err != nil {
		t.Fatal(err)
	}
	srv.stop(syscall.SIGKILL)
	if mountedImage(t, vol, folderB) == "" || mountedImage(t, vol, folderA) == "" {
		t.Fatal("a SIGKILL unmounted the workspaces")
	}
	if _, err := w.docker.ContainerRemove(ctx, b.ContainerID, dockerclient.ContainerRemoveOptions{Force: true}); err != nil {
		t.Fatal(err)
	}
	srv = w.start()
	if got := mountedImage(t, vol, folderB); got != "" {
		t.Errorf("%s still has %s mounted after the restart, with no sandbox", folderB, got)
	}
	if got := mountedImage(t, vol, folderA); got != imageA {
		t.Errorf("the live sandbox's workspace lost its mount at the restart: %q", got)
	}
	if !strings.Contains(srv.log(), `"workspace_unmounted"`) {
		t.Errorf("no workspace_unmounted in the log:\n%s", srv.log())
	}
	res, err = srv.api.Exec(ctx, chatA, client.ExecBody{Cmd: []string{"sh", "-c", "ls -l /workspace/more.bin && echo x > /workspace/after && df /workspace"}})
	if err != nil || res.ExitCode != 0 || !strings.Contains(res.Stdout, "/dev/loop") {
		t.Errorf("the live sandbox after the restart: %+v, %v", res, err)
	}
	if b, err := os.ReadFile(filepath.Join(folderA, "after")); err != nil || string(b) != "x\n" {
		t.Errorf("the host sees %q, %v in the live workspace", b, err)
	}

	// B comes back to its files: the image is mounted again.
	if _, _, err := srv.api.Create(ctx, chatB, client.CreateBody{}); err != nil {
		t.Fatal(err)
	}
	var got bytes.Buffer
	if _, err := srv.api.Download(ctx, chatB, "kept", &got); err != nil || got.String() != "b's" {
		t.Errorf("B's file after its sandbox came back: %q, %v", got.String(), err)
	}

	// A's sandbox ends: its image is unmounted, folder and image stay; DELETE removes both.
	if _, err := srv.api.Delete(ctx, chatA); err != nil {
		t.Fatal(err)
	}
	if got := mountedImage(t, vol, folderA); got != "" {
		t.Errorf("%s still mounted after its sandbox was deleted", got)
	}
	if _, err := os.Stat(imageA); err != nil {
		t.Errorf("the image went with the sandbox: %v", err)
	}
	if entries, err := os.ReadDir(folderA); err != nil || len(entries) != 0 {
		t.Errorf("the unmounted folder shows %v, %v; want the empty mount point", entries, err)
	}
	if r, err := srv.api.DeleteWorkspace(ctx, chatA); err != nil || r.Result != "removed" {
		t.Fatalf("delete workspace: %+v, %v", r, err)
	}
	for _, p := range []string{folderA, imageA} {
		if _, err := os.Lstat(p); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s after DELETE .../workspace: %v", p, err)
		}
	}
	_ = a
}

// The retention sweep removes a bounded workspace, image and all, once its sandbox has
// ended longer ago than workspace.retention: its last use is when its image was last
// written (unmounted), which the mount hid from the folder's own time.
func TestBoundedWorkspaceRetention(t *testing.T) {
	t.Parallel()
	w := newWorld(t, "SANDBOXD_AGENTS_DEFAULT_WORKSPACE_MAX_BYTES=16m",
		"SANDBOXD_WORKSPACE_RETENTION=5s", "SANDBOXD_SWEEP_INTERVAL=1s")
	srv := w.start()
	ctx := context.Background()
	vol := w.cfg.VolumeRoot
	chat := newChat()
	folder, image := filepath.Join(vol, chat), filepath.Join(vol, ".images", chat+".img")
	if _, _, err := srv.api.Create(ctx, chat, client.CreateBody{}); err != nil {
		t.Fatal(err)
	}
	if _, err := srv.api.Upload(ctx, chat, "f", strings.NewReader("x")); err != nil {
		t.Fatal(err)
	}
	// Older than the retention on its own: only the image's time keeps it.
	old := time.Now().Add(-time.Hour)
	if err := os.Chtimes(folder, old, old); err != nil {
		t.Fatal(err)
	}
	if _, err := srv.api.Delete(ctx, chat); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(folder, old, old); err != nil { // the unmounted folder's own
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second) // two sweeps
	if _, err := os.Stat(image); err != nil {
		t.Fatalf("the image went before its retention: %v\n%s", err, srv.log())
	}
	waitfor.True(t, 30*time.Second, "the bounded workspace removed by retention", func() bool {
		_, errF := os.Lstat(folder)
		_, errI := os.Lstat(image)
		return errors.Is(errF, fs.ErrNotExist) && errors.Is(errI, fs.ErrNotExist)
	})
	if mountedImage(t, vol, folder) != "" {
		t.Error("still mounted after retention")
	}
}

// A profile that asks for a bound the host cannot enforce (here: no mkfs.ext4 in PATH)
// stops sandboxd at start-up, saying why.
func TestWorkspaceQuotaRefusedWhereUnenforceable(t *testing.T) {
	t.Parallel()
	w := newWorld(t, "SANDBOXD_AGENTS_DEFAULT_WORKSPACE_MAX_BYTES=32m", "PATH="+t.TempDir())
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := w.cfg.Command()
	cmd = exec.CommandContext(ctx, cmd.Path, cmd.Args[1:]...)
	cmd.Dir, cmd.Env = w.dataDir, w.cfg.Env()
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || !strings.Contains(string(out), "workspace_max_bytes") || !strings.Contains(string(out), "mkfs.ext4") {
		t.Fatalf("sandboxd without mkfs.ext4: %v\n%s\nwant a refusal naming workspace_max_bytes and mkfs.ext4", err, out)
	}
}
