package kube

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/remotecommand"

	"github.com/sandboxd/sandboxd/internal/execwrap"
	"github.com/sandboxd/sandboxd/internal/lifecycle"
	"github.com/sandboxd/sandboxd/internal/sandbox"
)

var _ lifecycle.Terminals = (*Runtime)(nil)

// Terminal runs execwrap.Shell as the sandbox's user in its workspace on a pseudo-terminal (the
// pods/exec subresource with a TTY) until it exits, and returns its exit code. What
// t.Stdin gives is typed into it once the shell has started; t.Resize resizes it. Like
// Exec it runs through the wrapper of package execwrap, so when ctx ends first, or the
// output cannot be delivered, the shell and everything it started are killed before
// Terminal returns. A Pod that ends ends the session.
//
// Terminal does not wait for a Read of t.Stdin that blocks: the caller ends it (closes
// its pipe, say) after Terminal returns.
func (r *Runtime) Terminal(ctx context.Context, podName string, t lifecycle.TerminalIO) (int, error) {
	pod, err := r.owned(ctx, podName)
	if err != nil {
		return -1, err
	}
	if pod.Status.Phase != corev1.PodRunning || pod.DeletionTimestamp != nil {
		return -1, fmt.Errorf("kube: terminal in %s: not running: %w", podName, sandbox.ErrNotFound)
	}
	token := rand.Text()
	env := []string{"TERM=" + execwrap.TermEnv, execwrap.TokenVar + "=" + token}
	argv := append([]string{"/bin/sh", "-c", execPrelude + execwrap.Wrapper, "sandboxd-exec", workingDir(pod), strconv.Itoa(len(env))}, env...)
	argv = append(argv, execwrap.Shell)

	size := t.Size
	if size.Cols == 0 || size.Rows == 0 {
		size = lifecycle.DefaultTermSize
	}
	done := make(chan struct{})
	defer close(done)
	header := execwrap.NewHeaderWriter(execwrap.OrDiscard(t.Stdout))
	// What is typed goes in once the wrapper has reported (typed earlier, the
	// terminal's echo would mix with the wrapper's first line).
	stdin, typed := io.Pipe()
	go func() { // not waited for: a Read of t.Stdin may block
		defer typed.Close()
		select {
		case <-header.Came():
		case <-done:
			return
		}
		if t.Stdin != nil {
			_, _ = io.Copy(typed, t.Stdin)
		}
	}()
	sizes := &sizeQueue{first: size, later: t.Resize, done: done}

	req := r.cs.CoreV1().RESTClient().Post().Namespace(r.ns).Resource("pods").Name(podName).SubResource("exec").
		VersionedParams(&corev1.PodExecOptions{
			Container: containerName, Command: argv, Stdin: true, Stdout: true, TTY: true,
		}, scheme.ParameterCodec)
	ex, err := r.executor(req.URL())
	if err != nil {
		return -1, fmt.Errorf("kube: terminal in %s: %w", podName, err)
	}
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	streamed := make(chan error, 1)
	go func() {
		err := ex.StreamWithContext(sctx, remotecommand.StreamOptions{
			Stdin: stdin, Stdout: header, Tty: true, TerminalSizeQueue: sizes,
		})
		typed.Close() // ends the stream's copy of what is typed with EOF
		streamed <- err
	}()
	return r.await(ctx, podName, token, header, streamed, cancel)
}

// sizeQueue gives the terminal its first size, then the later ones, until done.
type sizeQueue struct {
	first lifecycle.TermSize
	sent  bool
	later <-chan lifecycle.TermSize
	done  <-chan struct{}
}

// Next is remotecommand.TerminalSizeQueue's: nil ends the resizing.
func (q *sizeQueue) Next() *remotecommand.TerminalSize {
	if !q.sent {
		q.sent = true
		return &remotecommand.TerminalSize{Width: q.first.Cols, Height: q.first.Rows}
	}
	for {
		select {
		case <-q.done:
			return nil
		case sz, ok := <-q.later:
			if !ok {
				return nil
			}
			if sz.Cols == 0 || sz.Rows == 0 {
				continue
			}
			return &remotecommand.TerminalSize{Width: sz.Cols, Height: sz.Rows}
		}
	}
}
