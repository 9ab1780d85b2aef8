package kube

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/sandboxd/sandboxd/internal/execwrap"
	"github.com/sandboxd/sandboxd/internal/hostfiles"
	"github.com/sandboxd/sandboxd/internal/lifecycle"
	"github.com/sandboxd/sandboxd/internal/rootfiles"
	"github.com/sandboxd/sandboxd/internal/sandbox"
)

// The file API is done inside the sandbox, by short scripts run over exec as the
// sandbox's user: no host path is involved, and written files belong to that user. Each
// resolves the path with every link on it (readlink -f) and refuses one that leads out of
// the workspace; on anything else it prints one line "sandboxd-files: <why>" and exits.
// What they print is the sandbox's and is read as hostile: bounded, parsed strictly.

// filesLib is what every files script starts with: $1 the workspace, $2 the path in it.
const filesLib = `root=$1
rel=$2
fail() { echo "sandboxd-files: $1"; exit 1; }
inside() { case $1 in "$root"|"$root"/*) return 0;; esac; return 1; }
`

// writeScript writes its input ($3 bytes at most) to the path through a temporary file
// renamed into place, making the missing folders on the way.
const writeScript = filesLib + `max=$3
dir=$root/$(dirname -- "$rel")
e=$dir
while [ ! -e "$e" ] && [ ! -L "$e" ]; do e=$(dirname -- "$e"); done
r=$(readlink -f -- "$e") && inside "$r" || fail outside
mkdir -p -- "$dir" 2>/dev/null || fail notfolder
r=$(readlink -f -- "$dir") && inside "$r" && [ -d "$r" ] || fail outside
t=$r/${rel##*/}
[ -d "$t" ] && fail folder
tmp=$r/.sandboxd-upload-$$
trap 'rm -f -- "$tmp"' EXIT
cat >"$tmp" || fail write
n=$(wc -c <"$tmp")
[ "$n" -gt "$max" ] && fail toolarge
mv -f -- "$tmp" "$t" || fail write
stat -c '%s %f %Y' -- "$t"
`

// readScript prints the file's size, mode and time on one line, then the file.
const readScript = filesLib + `r=$(readlink -f -- "$root/$rel") && [ -e "$r" ] || fail missing
inside "$r" || fail outside
[ -d "$r" ] && fail folder
[ -f "$r" ] || fail irregular
stat -c '%s %f %Y' -- "$r" && exec cat -- "$r"
`

// listScript prints size, mode, time and name of each entry of the folder, one a line.
const listScript = filesLib + `r=$(readlink -f -- "$root/$rel") && [ -e "$r" ] || fail missing
inside "$r" || fail outside
[ -d "$r" ] || fail notfolder
cd -- "$r" || fail notfolder
set -- * .[!.]* ..?*
[ $# -gt ` + maxListEntriesText + ` ] && fail toomany
echo ok
for f do [ -e "$f" ] || [ -L "$f" ] || continue; stat -c '%s %f %Y %n' -- "$f"; done
`

// MaxListEntries bounds a listing, as the Docker runtime's file API does.
const MaxListEntries = 10000

const maxListEntriesText = "10003" // MaxListEntries and the three glob patterns

// maxListOutput bounds what a listing may print: MaxListEntries of the longest names.
const maxListOutput = MaxListEntries * 300

// WriteFile writes r to name (up to maxBytes) in the sandbox's workspace through a
// temporary file renamed into place, so a refused or failed write leaves nothing behind.
// Missing parent folders are made.
func (r *Runtime) WriteFile(ctx context.Context, s sandbox.Session, name string, body io.Reader, maxBytes int64) (lifecycle.FileInfo, error) {
	root, rel, err := r.relative(s, name)
	if err != nil {
		return lifecycle.FileInfo{}, err
	}
	if rel == "." {
		return lifecycle.FileInfo{}, fmt.Errorf("kube: %q names a folder: %w", name, sandbox.ErrInvalid)
	}
	var out bytes.Buffer
	w := &execwrap.LimitedBuffer{B: &out, Left: 4 << 10}
	// One byte more than allowed tells the script the body is too large.
	err = r.stream(ctx, s.ContainerID, []string{"/bin/sh", "-c", writeScript, "sandboxd-files", root, rel, strconv.FormatInt(maxBytes, 10)},
		io.LimitReader(body, maxBytes+1), w, w)
	if err := r.filesOutcome(ctx, s, "write", name, err, out.String()); err != nil {
		return lifecycle.FileInfo{}, err
	}
	return parseInfo(rel, strings.TrimSpace(out.String()))
}

// OpenFile opens the regular file name of the sandbox's workspace for reading: its
// content streams from the sandbox until the reader is closed. Folders, devices and
// pipes are refused with sandbox.ErrInvalid.
func (r *Runtime) OpenFile(ctx context.Context, s sandbox.Session, name string) (io.ReadCloser, lifecycle.FileInfo, error) {
	root, rel, err := r.relative(s, name)
	if err != nil {
		return nil, lifecycle.FileInfo{}, err
	}
	pr, pw := io.Pipe()
	// The content is read after OpenFile returns: the stream ends with Close.
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	var errOut bytes.Buffer
	done := make(chan struct{})
	go func() {
		defer close(done)
		err := r.stream(sctx, s.ContainerID, []string{"/bin/sh", "-c", readScript, "sandboxd-files", root, rel}, nil, pw,
			&execwrap.LimitedBuffer{B: &errOut, Left: 4 << 10})
		if code, ended := exitCode(err); ended && code != 0 {
			err = fmt.Errorf("kube: read %q: exit %d: %w", name, code, sandbox.ErrUnavailable)
		}
		pw.CloseWithError(err) // nil: io.EOF
	}()
	rc := &streamReader{r: bufio.NewReader(pr), close: func() {
		cancel()
		_ = pr.Close()
		<-done
	}}
	line, err := rc.r.ReadSlice('\n')
	if err != nil || strings.HasPrefix(string(line), "sandboxd-files: ") {
		_ = rc.Close()
		if err == nil || errors.Is(err, io.EOF) {
			err = r.filesOutcome(ctx, s, "read", name, nil, string(line))
		}
		if err == nil {
			err = fmt.Errorf("kube: read %q: no answer from the sandbox: %w", name, sandbox.ErrUnavailable)
		}
		return nil, lifecycle.FileInfo{}, err
	}
	info, err := parseInfo(rel, strings.TrimSpace(string(line)))
	if err != nil {
		_ = rc.Close()
		return nil, lifecycle.FileInfo{}, err
	}
	return rc, info, nil
}

// ListDir lists the folder name of the sandbox's workspace ("" or "." for the workspace
// itself). Anything but a folder, and a folder of more than MaxListEntries entries, is
// refused with sandbox.ErrInvalid.
func (r *Runtime) ListDir(ctx context.Context, s sandbox.Session, name string) ([]lifecycle.FileInfo, error) {
	root, rel, err := r.relative(s, name)
	if err != nil {
		return nil, err
	}
	var out bytes.Buffer
	w := &execwrap.LimitedBuffer{B: &out, Left: maxListOutput + 1}
	err = r.stream(ctx, s.ContainerID, []string{"/bin/sh", "-c", listScript, "sandboxd-files", root, rel}, nil, w, io.Discard)
	text := out.String()
	if code, ended := exitCode(err); ended && code == 0 && !strings.HasPrefix(text, "ok\n") {
		return nil, fmt.Errorf("kube: list %q: unexpected answer from the sandbox: %w", name, sandbox.ErrUnavailable)
	}
	if err := r.filesOutcome(ctx, s, "list", name, err, text); err != nil {
		return nil, err
	}
	if out.Len() > maxListOutput {
		return nil, fmt.Errorf("kube: folder %q lists too long to hold: %w", name, sandbox.ErrInvalid)
	}
	var infos []lifecycle.FileInfo
	for _, line := range strings.Split(strings.TrimPrefix(text, "ok\n"), "\n") {
		if line == "" {
			continue
		}
		size, rest, _ := strings.Cut(line, " ")
		mode, rest, _ := strings.Cut(rest, " ")
		mtime, entry, ok := strings.Cut(rest, " ")
		fi, err := parseInfo(path.Join(rel, entry), size+" "+mode+" "+mtime)
		if !ok || err != nil || strings.Contains(entry, "/") {
			// A name with a newline in it: the rest of the previous entry's name.
			if n := len(infos); n > 0 {
				infos[n-1].Path += "\n" + line
				continue
			}
			return nil, fmt.Errorf("kube: list %q: unreadable entry: %w", name, sandbox.ErrUnavailable)
		}
		infos = append(infos, fi)
	}
	if len(infos) > MaxListEntries {
		return nil, fmt.Errorf("kube: folder %q has more than %d entries, too many to list: %w", name, MaxListEntries, sandbox.ErrInvalid)
	}
	return infos, nil
}

// filesOutcome turns a files script's outcome (its stream's error and what it printed)
// into the domain's errors: nil when it succeeded.
func (r *Runtime) filesOutcome(ctx context.Context, s sandbox.Session, op, name string, err error, out string) error {
	code, ended := exitCode(err)
	if !ended {
		return r.streamError(ctx, s.ContainerID, err)
	}
	why, refused := strings.CutPrefix(strings.TrimSpace(out), "sandboxd-files: ")
	if code == 0 && !refused {
		return nil
	}
	switch why {
	case "missing":
		return fmt.Errorf("kube: %s %q: %w", op, name, sandbox.ErrNotFound)
	case "outside":
		return fmt.Errorf("kube: %s %q: a link on the path leads out of the workspace: %w", op, name, sandbox.ErrInvalid)
	case "folder":
		return fmt.Errorf("kube: %s %q: it is a folder: %w", op, name, sandbox.ErrInvalid)
	case "notfolder":
		return fmt.Errorf("kube: %s %q: not a folder: %w", op, name, sandbox.ErrInvalid)
	case "irregular":
		return fmt.Errorf("kube: %s %q: not a regular file: %w", op, name, sandbox.ErrInvalid)
	case "toomany":
		return fmt.Errorf("kube: folder %q has more than %d entries, too many to list: %w", name, MaxListEntries, sandbox.ErrInvalid)
	case "toolarge":
		return fmt.Errorf("kube: %q is over the limit: %w", name, sandbox.ErrTooLarge)
	}
	first, _, _ := strings.Cut(strings.TrimSpace(out), "\n")
	return fmt.Errorf("kube: %s %q: exit %d: %.200q: %w", op, name, code, first, sandbox.ErrUnavailable)
}

// relative turns a client's path into the workspace mount and a path relative to it, by
// the rules every runtime's files follow (rootfiles.Resolve; /tmp has no meaning of its
// own here): a leading "/" or the mount point itself is stripped; ".." and NUL are
// refused (sandbox.ErrInvalid).
func (r *Runtime) relative(s sandbox.Session, name string) (root, rel string, err error) {
	mount := path.Clean(r.profileOf(s.AgentID).Workspace)
	rel, _, err = rootfiles.Resolve(name, mount, false)
	if err != nil {
		return "", "", fmt.Errorf("kube: %w", hostfiles.Domain(err))
	}
	return mount, rel, nil
}

// parseInfo reads "size rawmode(hex) mtime(unix seconds)" as stat printed it.
func parseInfo(rel, line string) (lifecycle.FileInfo, error) {
	f := strings.Fields(line)
	if len(f) != 3 {
		return lifecycle.FileInfo{}, fmt.Errorf("kube: unreadable file information %.100q: %w", line, sandbox.ErrUnavailable)
	}
	size, err1 := strconv.ParseInt(f[0], 10, 64)
	raw, err2 := strconv.ParseUint(f[1], 16, 32)
	mtime, err3 := strconv.ParseInt(f[2], 10, 64)
	if err := errors.Join(err1, err2, err3); err != nil || size < 0 {
		return lifecycle.FileInfo{}, fmt.Errorf("kube: unreadable file information %.100q: %w", line, sandbox.ErrUnavailable)
	}
	return lifecycle.FileInfo{Path: rel, Size: size, Mode: fileMode(uint32(raw)), ModTime: time.Unix(mtime, 0).UTC()}, nil
}

// fileMode translates a Unix st_mode into an fs.FileMode.
func fileMode(m uint32) fs.FileMode {
	mode := fs.FileMode(m & 0o777)
	switch m & 0o170000 {
	case 0o040000:
		mode |= fs.ModeDir
	case 0o120000:
		mode |= fs.ModeSymlink
	case 0o010000:
		mode |= fs.ModeNamedPipe
	case 0o140000:
		mode |= fs.ModeSocket
	case 0o020000:
		mode |= fs.ModeDevice | fs.ModeCharDevice
	case 0o060000:
		mode |= fs.ModeDevice
	}
	if m&0o4000 != 0 {
		mode |= fs.ModeSetuid
	}
	if m&0o2000 != 0 {
		mode |= fs.ModeSetgid
	}
	if m&0o1000 != 0 {
		mode |= fs.ModeSticky
	}
	return mode
}

// streamReader reads a file streaming out of the sandbox; Close ends the stream.
type streamReader struct {
	r     *bufio.Reader
	close func()
	done  bool
}

func (s *streamReader) Read(p []byte) (int, error) { return s.r.Read(p) }

func (s *streamReader) Close() error {
	if !s.done {
		s.done = true
		s.close()
	}
	return nil
}
