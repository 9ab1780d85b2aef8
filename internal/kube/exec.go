package kube

import (
	"bytes"
	"cmp"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net/url"
	"regexp"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/httpstream"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/remotecommand"
	utilexec "k8s.io/client-go/util/exec"

	"github.com/sandboxd/sandboxd/internal/execwrap"
	"github.com/sandboxd/sandboxd/internal/lifecycle"
	"github.com/sandboxd/sandboxd/internal/sandbox"
)

// The pods/exec subresource can set neither the environment nor the working folder of a
// command, so the shell that runs execwrap.Wrapper first goes to the folder ($1) and
// exports the $2 variables that follow.
const execPrelude = `cd -- "$1" 2>/dev/null || { echo "` + headerNoFolder + `"; exit 126; }
n=$2
shift 2
while [ "$n" -gt 0 ]; do export "$1"; shift; n=$((n-1)); done
`

const headerNoFolder = "sandboxd-exec: no such folder"

// shellName is what a variable name must be for the sandbox's shell to export it.
var shellName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// Exec runs cmd in the sandbox's container, as the sandbox's user, over the pods/exec
// subresource (WebSocket, or SPDY where the API server offers no WebSocket), with its
// output streamed to cmd.Stdout and cmd.Stderr as it comes, and returns the command's exit
// code. An empty cmd.Workdir is the sandbox's workspace (a relative one is taken from
// there); cmd.Env adds to the sandbox's environment (names must be shell variable names).
//
// When ctx ends first, or the output cannot be delivered, Exec kills the command and
// every process it started (see package execwrap) before it returns ctx's error (or the
// stream's), joined with any failure to kill.
//
// Errors wrap sandbox.ErrNotFound when the Pod is gone or not running,
// sandbox.ErrInvalid for a command that cannot start (no such program or folder, a bad
// variable name) or a Pod sandboxd did not make, sandbox.ErrUnavailable when the cluster
// cannot be reached.
func (r *Runtime) Exec(ctx context.Context, podName string, cmd lifecycle.ExecCommand) (int, error) {
	if len(cmd.Cmd) == 0 || cmd.Cmd[0] == "" {
		return -1, fmt.Errorf("kube: exec in %s: empty command: %w", podName, sandbox.ErrInvalid)
	}
	env, err := execwrap.Env(cmd.Env)
	if err != nil {
		return -1, fmt.Errorf("kube: exec in %s: %w", podName, err)
	}
	for k := range cmd.Env {
		if !shellName.MatchString(k) {
			return -1, fmt.Errorf("kube: exec in %s: environment variable %q is not a shell variable name: %w", podName, k, sandbox.ErrInvalid)
		}
	}
	token := rand.Text()
	env = append(env, execwrap.TokenVar+"="+token)
	pod, err := r.owned(ctx, podName)
	if err != nil {
		return -1, err
	}
	if pod.Status.Phase != corev1.PodRunning || pod.DeletionTimestamp != nil {
		return -1, fmt.Errorf("kube: exec in %s: not running: %w", podName, sandbox.ErrNotFound)
	}
	workdir := execwrap.Workdir(cmp.Or(workingDir(pod), "/"), cmd.Workdir) // the prelude needs a folder
	argv := append([]string{"/bin/sh", "-c", execPrelude + execwrap.Wrapper, "sandboxd-exec", workdir, strconv.Itoa(len(env))}, env...)
	argv = append(argv, cmd.Cmd...)

	header := execwrap.NewHeaderWriter(execwrap.OrDiscard(cmd.Stdout))
	// The stream outlives ctx: after a kill, the command's output ends by itself.
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	streamed := make(chan error, 1)
	go func() { streamed <- r.stream(sctx, podName, argv, cmd.Stdin, header, execwrap.OrDiscard(cmd.Stderr)) }()

	return r.await(ctx, podName, token, header, streamed, cancel)
}

// await waits for the command whose stream reports on streamed (and whose wrapper on
// header) and returns its exit code. When ctx ends first, or the stream fails, it kills the
// command and what it started (cancelling the stream once the kill is done) and returns
// why.
func (r *Runtime) await(ctx context.Context, podName, token string, header *execwrap.HeaderWriter, streamed <-chan error, cancel context.CancelFunc) (int, error) {
	cmd := execwrap.Command{
		Where: "kube: exec in " + podName, Starter: "runtime", Header: header, Token: token,
		Run: func(ctx context.Context, argv []string) (int, string, error) { return r.run(ctx, podName, argv) },
	}
	select {
	case err := <-streamed:
		code, ended := exitCode(err)
		switch {
		case ctx.Err() != nil:
			return -1, errors.Join(ctx.Err(), cmd.Kill(nil))
		case !ended:
			// Its output is lost: what is left of it must not run on.
			err = r.streamError(ctx, podName, err)
			return -1, errors.Join(err, cmd.Kill(nil))
		}
		if line, ok := header.First(); ok && line == headerNoFolder {
			return -1, fmt.Errorf("kube: exec in %s: no such working folder: %w", podName, sandbox.ErrInvalid)
		}
		return cmd.Result(code)
	case <-ctx.Done():
		err := cmd.Kill(streamed)
		cancel()
		return -1, errors.Join(ctx.Err(), err)
	}
}

// exitCode reads a stream's outcome: the command's exit code and true when it ended (0
// for no error), false when the stream failed.
func exitCode(err error) (int, bool) {
	if err == nil {
		return 0, true
	}
	var ee utilexec.ExitError
	if errors.As(err, &ee) && ee.Exited() {
		return ee.ExitStatus(), true
	}
	return -1, false
}

// streamError explains a failed stream: a Pod that is gone or stopped is
// sandbox.ErrNotFound, anything else sandbox.ErrUnavailable.
func (r *Runtime) streamError(ctx context.Context, podName string, err error) error {
	p, gerr := r.owned(ctx, podName)
	if errors.Is(gerr, sandbox.ErrNotFound) || gerr == nil && (p.Status.Phase != corev1.PodRunning || p.DeletionTimestamp != nil) {
		return fmt.Errorf("kube: exec in %s: the pod stopped: %w: %w", podName, sandbox.ErrNotFound, err)
	}
	return fmt.Errorf("kube: exec in %s: %w: %w", podName, sandbox.ErrUnavailable, err)
}

// stream runs argv in the Pod's container and copies its output until it ends.
func (r *Runtime) stream(ctx context.Context, podName string, argv []string, stdin io.Reader, stdout, stderr io.Writer) error {
	req := r.cs.CoreV1().RESTClient().Post().Namespace(r.ns).Resource("pods").Name(podName).SubResource("exec").
		VersionedParams(&corev1.PodExecOptions{
			Container: containerName, Command: argv, Stdin: stdin != nil, Stdout: true, Stderr: true,
		}, scheme.ParameterCodec)
	ex, err := r.executor(req.URL())
	if err != nil {
		return err
	}
	return ex.StreamWithContext(ctx, remotecommand.StreamOptions{Stdin: stdin, Stdout: stdout, Stderr: stderr})
}

// executor is WebSocket first, SPDY when the upgrade to WebSocket is refused (an older
// API server, a proxy on the way), as kubectl does.
func (r *Runtime) executor(u *url.URL) (remotecommand.Executor, error) {
	spdy, err := remotecommand.NewSPDYExecutor(r.rest, "POST", u)
	if err != nil {
		return nil, err
	}
	if r.spdyOnly {
		return spdy, nil
	}
	ws, err := remotecommand.NewWebSocketExecutor(r.rest, "GET", u.String())
	if err != nil {
		return nil, err
	}
	return remotecommand.NewFallbackExecutor(ws, spdy, func(err error) bool {
		return httpstream.IsUpgradeFailure(err) || httpstream.IsHTTPSProxyError(err)
	})
}

// run runs argv in the Pod's container and returns its exit code and (the first 4 KiB
// of) its output.
func (r *Runtime) run(ctx context.Context, podName string, argv []string) (int, string, error) {
	var out bytes.Buffer
	w := &execwrap.LimitedBuffer{B: &out, Left: 4 << 10}
	err := r.stream(ctx, podName, argv, nil, w, w)
	code, ended := exitCode(err)
	if !ended {
		return -1, "", r.streamError(ctx, podName, err)
	}
	return code, strings.TrimSpace(out.String()), nil
}

// workingDir is the folder the Pod's sandbox container was made to work in.
func workingDir(p *corev1.Pod) string {
	for _, c := range p.Spec.Containers {
		if c.Name == containerName {
			return c.WorkingDir
		}
	}
	return ""
}
