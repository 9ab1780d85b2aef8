package kube

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/sandboxd/sandboxd/internal/lifecycle"
	"github.com/sandboxd/sandboxd/internal/profile"
	"github.com/sandboxd/sandboxd/internal/sandbox"
)

// PodName is the name of the Pod of a chat's session: sandboxd-<chat id>-<session id>,
// as the Docker runtime names its containers.
func PodName(chatID, sessionID uuid.UUID) string {
	return "sandboxd-" + chatID.String() + "-" + sessionID.String()
}

// ClaimName is the name of a chat's workspace claim in tenant's part: sandboxd-ws-<chat
// id> for the default tenant ("" or sandbox.DefaultTenant), sandboxd-ws-<chat id>-<tenant
// in hex> for another, so
// that a chat id used by two tenants never reaches the other's files (a tenant's name may
// hold '_', which an object name may not).
func ClaimName(tenant string, chatID uuid.UUID) string {
	if tenant == "" || tenant == sandbox.DefaultTenant {
		return "sandboxd-ws-" + chatID.String()
	}
	return "sandboxd-ws-" + chatID.String() + "-" + hex.EncodeToString([]byte(tenant))
}

// Create makes the sandbox of spec and returns its RUNNING session once its container is
// ready (commands can run). It makes the chat's workspace claim when it is missing. A Pod
// that cannot start (image missing, unschedulable, refused by a quota or an admission
// rule, ended) fails the create with the cluster's reason and is removed. Errors wrap
// sandbox.ErrInvalid for a refused request and sandbox.ErrUnavailable when the cluster
// could not make or start the sandbox.
func (r *Runtime) Create(ctx context.Context, spec lifecycle.CreateSpec) (sandbox.Session, error) {
	prof, err := r.profiles.Lookup(spec.AgentID)
	if err != nil {
		return sandbox.Session{}, fmt.Errorf("kube: create: %w", err)
	}
	if strings.TrimSpace(spec.VolumeHostPath) != "" {
		return sandbox.Session{}, fmt.Errorf("kube: create: a host folder has no meaning on a cluster: %w", sandbox.ErrInvalid)
	}
	// The chat's workspace: its claim, whatever its name; else a pre-started sandbox of
	// the warm pool with a claim of its own (pool.go); else a new claim and a cold create.
	claim, found, err := r.chatClaim(ctx, spec.Tenant, spec.ChatID)
	if err != nil {
		return sandbox.Session{}, fmt.Errorf("kube: create: %w", err)
	}
	if !found {
		if s, ok := r.pool.claim(ctx, spec, false); ok {
			return s, nil
		}
		// A claim that failed half-way may have made the pooled claim the chat's.
		if claim, found, err = r.chatClaim(ctx, spec.Tenant, spec.ChatID); err != nil {
			return sandbox.Session{}, fmt.Errorf("kube: create: %w", err)
		}
	} else {
		r.pool.claim(ctx, spec, true) // counted as a miss: the chat keeps its files
	}
	if !found {
		claim = ClaimName(spec.Tenant, spec.ChatID)
		l, a := r.chatClaimMeta(spec.Tenant, spec.ChatID)
		if err := r.makeClaim(ctx, claim, l, a); err != nil {
			return sandbox.Session{}, err
		}
	}
	pod := r.podFor(spec, prof, claim)
	created, err := r.cs.CoreV1().Pods(r.ns).Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		err = apiError("create pod "+pod.Name, err)
		if !errors.Is(err, sandbox.ErrInvalid) && !errors.Is(err, sandbox.ErrUnavailable) {
			err = fmt.Errorf("%w: %w", sandbox.ErrUnavailable, err)
		}
		return sandbox.Session{}, err
	}
	if err := r.waitReady(ctx, created); err != nil {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), teardownTimeout)
		defer cancel()
		return sandbox.Session{}, errors.Join(err, r.remove(ctx, pod.Name, 0))
	}
	return sandbox.Session{
		ID:          spec.SessionID,
		ChatID:      spec.ChatID,
		ContainerID: pod.Name,
		Status:      sandbox.StatusRunning,
		CreatedAt:   spec.CreatedAt,
		ExpiresAt:   spec.ExpiresAt,
		AgentID:     spec.AgentID,
	}, nil
}

// chatClaim returns the name of the workspace claim of tenant's chat, whatever its name
// (ClaimName for one a cold create made, a pool's name for one claimed from the warm
// pool): the claim labelled with the chat's id whose tenant annotation is tenant's, the
// oldest if several are. A claim the cluster is still removing (DELETE .../workspace) is
// waited for: a Pod on it would never start, and the new one comes after.
func (r *Runtime) chatClaim(ctx context.Context, tenant string, chatID uuid.UUID) (string, bool, error) {
	sel := labels.SelectorFromSet(labels.Set{LabelManagedBy: ManagedBy, LabelChatID: chatID.String()}).String()
	for {
		list, err := r.cs.CoreV1().PersistentVolumeClaims(r.ns).List(ctx, metav1.ListOptions{LabelSelector: sel})
		if err != nil {
			return "", false, apiError("list claims of chat "+chatID.String(), err)
		}
		var best *corev1.PersistentVolumeClaim
		going := false
		for i := range list.Items {
			c := &list.Items[i]
			if !sameTenant(c.Annotations[AnnotationTenant], tenant) {
				continue
			}
			if c.DeletionTimestamp != nil {
				going = true
				continue
			}
			if best == nil || c.CreationTimestamp.Before(&best.CreationTimestamp) ||
				(c.CreationTimestamp.Equal(&best.CreationTimestamp) && c.Name < best.Name) {
				best = c
			}
		}
		switch {
		case best != nil:
			return best.Name, true, nil
		case !going:
			return "", false, nil
		}
		select {
		case <-ctx.Done():
			return "", false, fmt.Errorf("kube: the workspace claim of chat %s is still being removed: %w: %w", chatID, sandbox.ErrUnavailable, ctx.Err())
		case <-time.After(removePoll):
		}
	}
}

// sameTenant tells whether two tenant names are the same tenant ("" is the default one).
func sameTenant(a, b string) bool {
	norm := func(t string) string {
		if t == sandbox.DefaultTenant {
			return ""
		}
		return t
	}
	return norm(a) == norm(b)
}

// makeClaim makes the workspace claim name with labels and annotations; one that exists
// already (made by another replica) is fine. The claim outlives the chat's sandboxes, as
// the Docker runtime's workspace folder does.
func (r *Runtime) makeClaim(ctx context.Context, name string, labels, annotations map[string]string) error {
	_, err := r.cs.CoreV1().PersistentVolumeClaims(r.ns).Create(ctx, r.claimObject(name, labels, annotations), metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) { // another replica made it: fine
		return apiError("create claim "+name, err)
	}
	return nil
}

// claimObject is a workspace claim: the configured size and storage class.
func (r *Runtime) claimObject(name string, labels, annotations map[string]string) *corev1.PersistentVolumeClaim {
	claim := &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels, Annotations: annotations},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			Resources:   corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: r.size}},
		},
	}
	if r.class != "" {
		claim.Spec.StorageClassName = &r.class
	}
	return claim
}

// ColdObjects returns the workspace claim and the Pod that Create makes, in that order,
// for spec on a chat without a claim (a cold create): for a baseline that makes the very
// same objects through the API (cmd/sandboxbench).
func (r *Runtime) ColdObjects(spec lifecycle.CreateSpec) (*corev1.PersistentVolumeClaim, *corev1.Pod, error) {
	prof, err := r.profiles.Lookup(spec.AgentID)
	if err != nil {
		return nil, nil, fmt.Errorf("kube: %w", err)
	}
	name := ClaimName(spec.Tenant, spec.ChatID)
	l, a := r.chatClaimMeta(spec.Tenant, spec.ChatID)
	return r.claimObject(name, l, a), r.podFor(spec, prof, name), nil
}

// chatClaimMeta are the labels and annotations of the workspace claim of tenant's chat.
func (r *Runtime) chatClaimMeta(tenant string, chatID uuid.UUID) (labels, annotations map[string]string) {
	labels = map[string]string{LabelManagedBy: ManagedBy, LabelInstance: r.instance, LabelChatID: chatID.String()}
	annotations = map[string]string{}
	if !sameTenant(tenant, "") {
		annotations[AnnotationTenant] = tenant
	}
	return labels, annotations
}

// sessionAnnotations are the annotations of the session's Pod.
func sessionAnnotations(spec lifecycle.CreateSpec) map[string]string {
	a := map[string]string{
		AnnotationAgentID:   spec.AgentID,
		AnnotationCreatedAt: spec.CreatedAt.UTC().Format(time.RFC3339Nano),
		AnnotationExpiresAt: spec.ExpiresAt.UTC().Format(time.RFC3339Nano),
	}
	if spec.Tenant != "" {
		a[AnnotationTenant] = spec.Tenant
	}
	return a
}

// podFor translates the profile into the sandbox's Pod, its workspace the claim named.
func (r *Runtime) podFor(spec lifecycle.CreateSpec, p profile.Profile, claim string) *corev1.Pod {
	yes, no := true, false
	uid, gid := int64(p.UID), int64(p.GID)
	env := make([]corev1.EnvVar, 0, len(p.Env))
	for _, k := range slices.Sorted(maps.Keys(p.Env)) {
		env = append(env, corev1.EnvVar{Name: k, Value: p.Env[k]})
	}
	cpu := resource.NewMilliQuantity(p.NanoCPUs/1e6, resource.DecimalSI)
	mem := resource.NewQuantity(p.MemoryBytes, resource.BinarySI)
	tmp := resource.NewQuantity(p.TmpfsBytes, resource.BinarySI)
	grace := r.stopSeconds
	onRootMismatch := corev1.FSGroupChangeOnRootMismatch
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name: PodName(spec.ChatID, spec.SessionID),
			Labels: map[string]string{
				LabelManagedBy: ManagedBy,
				LabelInstance:  r.instance,
				LabelChatID:    spec.ChatID.String(),
				LabelSessionID: spec.SessionID.String(),
			},
			Annotations: sessionAnnotations(spec),
		},
		Spec: corev1.PodSpec{
			RestartPolicy:                 corev1.RestartPolicyNever,
			AutomountServiceAccountToken:  &no,
			EnableServiceLinks:            &no,
			Hostname:                      "sandbox",
			TerminationGracePeriodSeconds: &grace,
			// The pause container is the sandbox's init: it reaps what commands leave
			// behind, and the sandbox's own process gets SIGTERM at stop.
			ShareProcessNamespace: &yes,
			SecurityContext: &corev1.PodSecurityContext{
				RunAsNonRoot:        &yes,
				RunAsUser:           &uid,
				RunAsGroup:          &gid,
				FSGroup:             &gid, // the workspace volume is the sandbox group's
				FSGroupChangePolicy: &onRootMismatch,
				SeccompProfile:      &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
			},
			Containers: []corev1.Container{{
				Name:            containerName,
				Image:           p.Image,
				ImagePullPolicy: corev1.PullIfNotPresent,
				Env:             env,
				WorkingDir:      p.Workspace,
				SecurityContext: &corev1.SecurityContext{
					Privileged:               &no,
					AllowPrivilegeEscalation: &no,
					ReadOnlyRootFilesystem:   &yes,
					RunAsNonRoot:             &yes,
					Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
				},
				Resources: corev1.ResourceRequirements{
					Limits: corev1.ResourceList{corev1.ResourceCPU: *cpu, corev1.ResourceMemory: *mem},
					// Sandboxes idle most of the time: they ask the scheduler for a tenth of
					// their CPU and a quarter of their memory, and may use up to the limits.
					Requests: corev1.ResourceList{
						corev1.ResourceCPU:    *resource.NewMilliQuantity(max(p.NanoCPUs/1e7, 1), resource.DecimalSI),
						corev1.ResourceMemory: *resource.NewQuantity(p.MemoryBytes/4, resource.BinarySI),
					},
				},
				VolumeMounts: []corev1.VolumeMount{
					{Name: "workspace", MountPath: p.Workspace},
					{Name: "tmp", MountPath: "/tmp"},
				},
			}},
			Volumes: []corev1.Volume{
				{Name: "workspace", VolumeSource: corev1.VolumeSource{
					PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: claim},
				}},
				{Name: "tmp", VolumeSource: corev1.VolumeSource{
					EmptyDir: &corev1.EmptyDirVolumeSource{Medium: corev1.StorageMediumMemory, SizeLimit: tmp},
				}},
			},
		},
	}
	if r.registry != "" {
		pod.Labels[LabelRegistry] = r.registry
	}
	if p.Runtime != "" {
		rc := p.Runtime
		pod.Spec.RuntimeClassName = &rc
	}
	if r.deadline > 0 {
		d := r.deadline
		pod.Spec.ActiveDeadlineSeconds = &d
	}
	return pod
}

// waitReady waits until the Pod runs and its container is ready, or fails with why it
// cannot start.
func (r *Runtime) waitReady(ctx context.Context, pod *corev1.Pod) error {
	w, err := r.cs.CoreV1().Pods(r.ns).Watch(ctx, metav1.ListOptions{
		FieldSelector:   fields.OneTermEqualSelector("metadata.name", pod.Name).String(),
		ResourceVersion: pod.ResourceVersion,
	})
	if err != nil {
		return apiError("watch pod "+pod.Name, err)
	}
	defer w.Stop()
	if done, err := started(pod); done {
		return err
	}
	for {
		select {
		case <-ctx.Done():
			return fmt.Errorf("kube: pod %s not ready: %w", pod.Name, ctx.Err())
		case ev, ok := <-w.ResultChan():
			if !ok {
				// The watch ended (the API server closes watches now and then): look again.
				p, err := r.cs.CoreV1().Pods(r.ns).Get(ctx, pod.Name, metav1.GetOptions{})
				if err != nil {
					return apiError("get pod "+pod.Name, err)
				}
				return r.waitReady(ctx, p)
			}
			switch ev.Type {
			case watch.Deleted:
				return fmt.Errorf("kube: pod %s was deleted while it started: %w", pod.Name, sandbox.ErrUnavailable)
			case watch.Error:
				return fmt.Errorf("kube: watch pod %s: %w: %v", pod.Name, sandbox.ErrUnavailable, apierrors.FromObject(ev.Object))
			}
			p, ok := ev.Object.(*corev1.Pod)
			if !ok {
				continue
			}
			if done, err := started(p); done {
				return err
			}
		}
	}
}

// volumePending tells whether an unschedulable Pod's message is about its workspace claim
// on the way, which passes by itself: a claim still being bound, one the scheduler has not
// seen yet (just made: `persistentvolumeclaim "..." not found`), or one bound to a volume
// the scheduler has not seen yet (`pvc(s) bound to non-existent pv(s)`). A claim that never
// binds ends the create at its deadline instead.
func volumePending(msg string) bool {
	msg = strings.ToLower(msg)
	return strings.Contains(msg, "persistentvolumeclaim") || strings.Contains(msg, "pvc(s)")
}

// waitingFatal are the reasons a container waits that mean it will not start without
// someone changing something.
var waitingFatal = map[string]bool{
	"ErrImagePull": true, "ImagePullBackOff": true, "ErrImageNeverPull": true, "InvalidImageName": true,
	"CreateContainerConfigError": true, "CreateContainerError": true, "RunContainerError": true,
	"CrashLoopBackOff": true, "PreCreateHookError": true, "PreStartHookError": true,
}

// started tells whether the Pod is done starting: ready (nil), or never going to be (the
// reason, wrapping sandbox.ErrUnavailable).
func started(p *corev1.Pod) (bool, error) {
	fail := func(format string, a ...any) (bool, error) {
		return true, fmt.Errorf("kube: pod %s cannot start: %s: %w", p.Name, fmt.Sprintf(format, a...), sandbox.ErrUnavailable)
	}
	switch p.Status.Phase {
	case corev1.PodFailed, corev1.PodSucceeded:
		return fail("it ended (%s): %s %s", p.Status.Phase, p.Status.Reason, p.Status.Message)
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse && c.Reason == corev1.PodReasonUnschedulable &&
			!volumePending(c.Message) {
			return fail("unschedulable: %s", c.Message)
		}
	}
	for _, c := range p.Status.ContainerStatuses {
		switch {
		case c.State.Waiting != nil && waitingFatal[c.State.Waiting.Reason]:
			return fail("%s: %s", c.State.Waiting.Reason, c.State.Waiting.Message)
		case c.State.Terminated != nil:
			return fail("its container ended: %s (exit %d) %s", c.State.Terminated.Reason, c.State.Terminated.ExitCode, c.State.Terminated.Message)
		case p.Status.Phase == corev1.PodRunning && c.Name == containerName && c.Ready:
			return true, nil
		}
	}
	return false, nil
}

// Stop deletes the sandbox's Pod gracefully (its process gets SIGTERM, and SIGKILL after
// the stop timeout) and waits until it is gone; the workspace claim stays. A Pod that is
// gone is no error. Errors wrap sandbox.ErrUnavailable when the cluster cannot be
// reached, and sandbox.ErrInvalid when podName is not a sandboxd Pod.
func (r *Runtime) Stop(ctx context.Context, podName string) error {
	p, err := r.owned(ctx, podName)
	if err != nil {
		return gone(err)
	}
	if err := r.remove(ctx, podName, r.stopSeconds); err != nil {
		return err
	}
	r.claimUsed(ctx, p)
	return nil
}

// Delete removes the sandbox's Pod at once (no grace period) and waits until it is gone;
// the workspace claim stays. A Pod that is gone is no error. Errors are Stop's.
func (r *Runtime) Delete(ctx context.Context, podName string) error {
	p, err := r.owned(ctx, podName)
	if err != nil {
		return gone(err)
	}
	if err := r.remove(ctx, podName, 0); err != nil {
		return err
	}
	r.claimUsed(ctx, p)
	return nil
}

// owned returns the Pod podName, refusing one that sandboxd did not make; a missing Pod
// is sandbox.ErrNotFound.
func (r *Runtime) owned(ctx context.Context, podName string) (*corev1.Pod, error) {
	if strings.TrimSpace(podName) == "" {
		return nil, fmt.Errorf("kube: empty pod name: %w", sandbox.ErrInvalid)
	}
	p, err := r.cs.CoreV1().Pods(r.ns).Get(ctx, podName, metav1.GetOptions{})
	if err != nil {
		return nil, apiError("get pod "+podName, err)
	}
	if p.Labels[LabelManagedBy] != ManagedBy {
		return nil, fmt.Errorf("kube: pod %s is not managed by sandboxd: %w", podName, sandbox.ErrInvalid)
	}
	return p, nil
}

// removePoll is how often remove looks whether a deleted Pod is gone.
const removePoll = 100 * time.Millisecond

// remove deletes the Pod with the grace period given and waits, for up to
// teardownTimeout past the grace period and while ctx lasts, until the kubelet has ended
// it and the Pod is gone. Deleting a Pod another removal is deleting already is fine.
func (r *Runtime) remove(ctx context.Context, podName string, graceSeconds int64) error {
	ctx, cancel := context.WithTimeout(ctx, teardownTimeout+time.Duration(graceSeconds)*time.Second)
	defer cancel()
	err := r.cs.CoreV1().Pods(r.ns).Delete(ctx, podName, metav1.DeleteOptions{GracePeriodSeconds: &graceSeconds})
	if err != nil {
		return gone(apiError("delete pod "+podName, err))
	}
	for {
		_, err := r.cs.CoreV1().Pods(r.ns).Get(ctx, podName, metav1.GetOptions{})
		if err != nil {
			return gone(apiError("delete pod "+podName, err))
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("kube: delete pod %s: still there: %w: %w", podName, sandbox.ErrUnavailable, ctx.Err())
		case <-time.After(removePoll):
		}
	}
}

// gone turns "not found" into success: what is already gone needs no removing.
func gone(err error) error {
	if errors.Is(err, sandbox.ErrNotFound) {
		return nil
	}
	return err
}

// sandboxSelector selects this instance's sandbox Pods: every Pod of the instance but the
// unclaimed ones of the warm pool, which the pool owns.
func (r *Runtime) sandboxSelector() string {
	unpooled, err := labels.NewRequirement(LabelPool, selection.DoesNotExist, nil)
	if err != nil {
		panic(err) // a constant label name that is valid
	}
	return labels.SelectorFromSet(labels.Set{LabelManagedBy: ManagedBy, LabelInstance: r.instance}).Add(*unpooled).String()
}

// Managed lists every Pod, running or not, that carries this instance's labels, but the
// warm pool's unclaimed ones (a claimed one is its chat's). Its error wraps
// sandbox.ErrUnavailable when the cluster cannot be reached.
func (r *Runtime) Managed(ctx context.Context) ([]lifecycle.Container, error) {
	list, err := r.cs.CoreV1().Pods(r.ns).List(ctx, metav1.ListOptions{LabelSelector: r.sandboxSelector()})
	if err != nil {
		return nil, apiError("list pods", err)
	}
	out := make([]lifecycle.Container, 0, len(list.Items))
	for _, p := range list.Items {
		// Unparsable ids stay uuid.Nil: the Pod is ours all the same, and the registry
		// holds no record for the nil chat, so the reconciler removes it.
		chatID, _ := uuid.Parse(p.Labels[LabelChatID])
		sessionID, _ := uuid.Parse(p.Labels[LabelSessionID])
		c := lifecycle.Container{
			ID:        p.Name,
			ChatID:    chatID,
			SessionID: sessionID,
			CreatedAt: p.CreationTimestamp.Time,
			Running:   p.Status.Phase == corev1.PodRunning && p.DeletionTimestamp == nil,
			Registry:  p.Labels[LabelRegistry],
			Tenant:    p.Annotations[AnnotationTenant],
			AgentID:   p.Annotations[AnnotationAgentID],
		}
		c.SessionCreatedAt, _ = time.Parse(time.RFC3339Nano, p.Annotations[AnnotationCreatedAt])
		c.ExpiresAt, _ = time.Parse(time.RFC3339Nano, p.Annotations[AnnotationExpiresAt])
		out = append(out, c)
	}
	return out, nil
}
