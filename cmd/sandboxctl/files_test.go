package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sandboxd/sandboxd/client"
)

func TestCopyBothWaysAndList(t *testing.T) {
	srv := newServer(t)
	workspace := t.TempDir()
	mustRun(t, srv, "create", chatA, "--volume", workspace)
	local := t.TempDir()
	content := make([]byte, 100<<10)
	_, _ = rand.Read(content)
	src := filepath.Join(local, "blob.bin")
	if err := os.WriteFile(src, content, 0o644); err != nil {
		t.Fatal(err)
	}

	mustRun(t, srv, "cp", src, chatA+":in/blob.bin")
	if got, err := os.ReadFile(filepath.Join(workspace, "in", "blob.bin")); err != nil || !bytes.Equal(got, content) {
		t.Fatalf("uploaded file: %d bytes, %v", len(got), err)
	}
	mustRun(t, srv, "cp", src, chatA+":/workspace/in/") // a folder: the local name is kept

	back := filepath.Join(local, "back.bin")
	mustRun(t, srv, "cp", chatA+":/workspace/in/blob.bin", back)
	if got, err := os.ReadFile(back); err != nil || !bytes.Equal(got, content) {
		t.Fatalf("downloaded file: %d bytes, %v", len(got), err)
	}
	into := t.TempDir()
	mustRun(t, srv, "cp", chatA+":in/blob.bin", into) // a folder: the remote name is kept
	if got, err := os.ReadFile(filepath.Join(into, "blob.bin")); err != nil || !bytes.Equal(got, content) {
		t.Errorf("download into a folder: %d bytes, %v", len(got), err)
	}
	if out := mustRun(t, srv, "cp", chatA+":in/blob.bin", "-"); out != string(content) {
		t.Errorf("download to stdout: %d bytes", len(out))
	}

	// A failed download leaves the local file alone and no temporary file behind.
	if err := os.WriteFile(back, []byte("mine"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := sandboxctl(t, srv, "cp", chatA+":nope", back); !errors.Is(err, client.ErrNotFound) {
		t.Errorf("cp of a missing file: %v, want 404", err)
	}
	if got, _ := os.ReadFile(back); string(got) != "mine" {
		t.Errorf("the local file after a failed download: %q", got)
	}
	if des, _ := os.ReadDir(local); len(des) != 2 {
		t.Errorf("the local folder holds %d entries, want 2", len(des))
	}

	out := mustRun(t, srv, "ls", chatA, "in")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "MODE") || !strings.HasPrefix(lines[1], "-rw-r--r--  102400  ") ||
		!strings.HasSuffix(lines[1], " in/blob.bin") {
		t.Errorf("ls table:\n%s", out)
	}
	var items []client.FileInfo
	decode(t, mustRun(t, srv, "ls", chatA, "--json"), &items)
	if len(items) != 1 || items[0].Path != "in" || !items[0].IsDir {
		t.Errorf("ls --json = %+v", items)
	}

	for _, args := range [][]string{
		{"cp", src, back},                         // both local
		{"cp", chatA + ":a", chatA + ":b"},        // both remote
		{"cp", chatA + ":../../etc/passwd", back}, // outside the workspace
		{"cp", filepath.Join(local, "nope"), chatA + ":x"},
	} {
		if _, _, err := sandboxctl(t, srv, args...); err == nil {
			t.Errorf("sandboxctl %s: no error", strings.Join(args, " "))
		}
	}
}

// "cp - <chat>:<path>" uploads what comes on stdin; it must name the file.
func TestCopyFromStdin(t *testing.T) {
	srv := newServer(t)
	workspace := t.TempDir()
	mustRun(t, srv, "create", chatA, "--volume", workspace)
	env := map[string]string{"SANDBOXD_URL": srv.URL, "SANDBOXD_TOKEN": token}
	cp := func(dst string) error {
		var out, errOut bytes.Buffer
		return run(context.Background(), []string{"cp", "-", dst}, func(k string) string { return env[k] },
			strings.NewReader("from stdin\n"), &out, &errOut)
	}
	if err := cp(chatA + ":notes/in.txt"); err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(filepath.Join(workspace, "notes", "in.txt")); err != nil || string(got) != "from stdin\n" {
		t.Errorf("uploaded from stdin: %q, %v", got, err)
	}
	if err := cp(chatA + ":notes/"); err == nil || !strings.Contains(err.Error(), "name the file") {
		t.Errorf("cp - to a folder: %v, want an error that asks for a file name", err)
	}
}
