package kube

import (
	"context"
	"fmt"

	"github.com/google/uuid"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/sandboxd/sandboxd/internal/lifecycle"
	"github.com/sandboxd/sandboxd/internal/sandbox"
)

var _ lifecycle.Watcher = (*Runtime)(nil)

// Watch follows this instance's sandbox Pods (those Managed lists: an unclaimed Pod of the
// warm pool is not one, a claimed one enters the watch as its chat's) through a watch of
// the API server: it reports a Pod whose sandbox container ended (or whose Pod failed, e.g. past
// its activeDeadlineSeconds) once, and a Pod that was deleted. It returns when the watch
// breaks (the API server ends watches now and then) or ctx ends; the lifecycle's Follow
// opens it again and reconciles, since what ended in between was not reported.
func (r *Runtime) Watch(ctx context.Context, connected func(), ended func(lifecycle.Ending)) error {
	sel := r.sandboxSelector()
	// The list gives the version to watch from; what ended before it is the
	// reconciliation's (which Follow runs on every connection).
	list, err := r.cs.CoreV1().Pods(r.ns).List(ctx, metav1.ListOptions{LabelSelector: sel, Limit: 1})
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return apiError("list pods", err)
	}
	w, err := r.cs.CoreV1().Pods(r.ns).Watch(ctx, metav1.ListOptions{
		LabelSelector: sel, ResourceVersion: list.ResourceVersion, AllowWatchBookmarks: true,
	})
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return apiError("watch pods", err)
	}
	defer w.Stop()
	connected()
	reported := map[string]bool{} // Pods whose end was reported: once is enough
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case ev, ok := <-w.ResultChan():
			if !ok {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				return fmt.Errorf("kube: watch pods: the API server ended the watch: %w", sandbox.ErrUnavailable)
			}
			if ev.Type == watch.Error {
				return fmt.Errorf("kube: watch pods: %w: %w", sandbox.ErrUnavailable, apierrors.FromObject(ev.Object))
			}
			p, ok := ev.Object.(*corev1.Pod)
			if !ok {
				continue
			}
			switch ev.Type {
			case watch.Deleted:
				delete(reported, p.Name)
				e := endingOfPod(p)
				e.Removed = true
				ended(e)
			case watch.Added, watch.Modified:
				if e, done := podEnded(p); done && !reported[p.Name] {
					reported[p.Name] = true
					ended(e)
				}
			}
		}
	}
}

// podEnded tells whether the Pod's sandbox has ended: the Pod failed or succeeded, or its
// sandbox container terminated.
func podEnded(p *corev1.Pod) (lifecycle.Ending, bool) {
	e := endingOfPod(p)
	done := p.Status.Phase == corev1.PodFailed || p.Status.Phase == corev1.PodSucceeded
	for _, c := range p.Status.ContainerStatuses {
		if c.Name != containerName || c.State.Terminated == nil {
			continue
		}
		done = true
		e.ExitCode = int(c.State.Terminated.ExitCode)
		e.OOM = c.State.Terminated.Reason == "OOMKilled"
	}
	return e, done
}

// endingOfPod reads the ids of a Pod's labels. An unparsable label leaves uuid.Nil: the
// lifecycle then has no chat to repair, and the reconciler removes the Pod.
func endingOfPod(p *corev1.Pod) lifecycle.Ending {
	e := lifecycle.Ending{ContainerID: p.Name}
	e.ChatID, _ = uuid.Parse(p.Labels[LabelChatID])
	e.SessionID, _ = uuid.Parse(p.Labels[LabelSessionID])
	return e
}
