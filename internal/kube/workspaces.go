package kube

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"

	"github.com/sandboxd/sandboxd/internal/lifecycle"
	"github.com/sandboxd/sandboxd/internal/sandbox"
)

var _ lifecycle.Workspaces = (*Runtime)(nil)

// AnnotationLastUsed is on a workspace claim: when a sandbox last ended with it (RFC
// 3339), for the workspace retention.
const AnnotationLastUsed = "sandboxd.last-used"

// claimPrefix is how a workspace claim is named as a lifecycle folder:
// persistentvolumeclaim/<name>, as kubectl names it.
const claimPrefix = "persistentvolumeclaim/"

// Derive names the chat's workspace claim in tenant's part, as the lifecycle names
// workspace folders (DELETE .../workspace, the retention).
func (r *Runtime) Derive(tenant string, chatID uuid.UUID) string {
	return claimPrefix + ClaimName(tenant, chatID)
}

// Folders lists this instance's workspace claims, each with its chat and when a sandbox
// last ended with it (or, for a claim no sandbox has ended with yet, when it was made).
func (r *Runtime) Folders(ctx context.Context) ([]lifecycle.Folder, error) {
	sel := labels.SelectorFromSet(labels.Set{LabelManagedBy: ManagedBy, LabelInstance: r.instance})
	list, err := r.cs.CoreV1().PersistentVolumeClaims(r.ns).List(ctx, metav1.ListOptions{LabelSelector: sel.String()})
	if err != nil {
		return nil, apiError("list claims", err)
	}
	out := make([]lifecycle.Folder, 0, len(list.Items))
	for _, c := range list.Items {
		chatID, err := uuid.Parse(c.Labels[LabelChatID])
		if err != nil || c.DeletionTimestamp != nil {
			continue // not a chat's (nothing the retention may remove), or going already
		}
		used := c.CreationTimestamp.Time
		if t, err := time.Parse(time.RFC3339Nano, c.Annotations[AnnotationLastUsed]); err == nil && t.After(used) {
			used = t
		}
		out = append(out, lifecycle.Folder{Path: claimPrefix + c.Name, ChatID: chatID, LastUsed: used})
	}
	return out, nil
}

// Touch marks the claim path used at t. A missing claim is no error.
func (r *Runtime) Touch(ctx context.Context, path string, t time.Time) error {
	name, err := claimOf(path)
	if err != nil {
		return err
	}
	return gone(r.annotateUsed(ctx, name, t))
}

// RemoveFolder deletes the workspace claim path (and with it, by the storage class's
// reclaim policy, its volume). The path Derive gives names the chat's claim whatever its
// name: one the chat claimed from the warm pool keeps the pool's. It reports false, and
// no error, when there was none; a claim sandboxd did not make, or an unclaimed one of
// the warm pool, is refused (sandbox.ErrInvalid).
func (r *Runtime) RemoveFolder(ctx context.Context, path string) (bool, error) {
	name, err := claimOf(path)
	if err != nil {
		return false, err
	}
	if tenant, chatID, ok := parseClaimName(name); ok {
		// The chat's claim from the warm pool, if that is the chat's workspace.
		pooled, found, err := r.pooledChatClaim(ctx, tenant, chatID)
		if err != nil {
			return false, err
		}
		if found {
			name = pooled
		}
	}
	c, err := r.cs.CoreV1().PersistentVolumeClaims(r.ns).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, apiError("get claim "+name, err)
	}
	if c.Labels[LabelManagedBy] != ManagedBy || c.Labels[LabelInstance] != r.instance {
		return false, fmt.Errorf("kube: claim %s is not this sandboxd's: %w", name, sandbox.ErrInvalid)
	}
	if c.Labels[LabelChatID] == "" {
		return false, fmt.Errorf("kube: claim %s is no chat's workspace (an unclaimed one of the warm pool): %w", name, sandbox.ErrInvalid)
	}
	if c.DeletionTimestamp != nil {
		return false, nil // removed already: the cluster finishes it
	}
	// Only the claim read above: one made again meanwhile is another's.
	err = r.cs.CoreV1().PersistentVolumeClaims(r.ns).Delete(ctx, name, metav1.DeleteOptions{
		Preconditions: &metav1.Preconditions{UID: &c.UID},
	})
	if apierrors.IsNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, apiError("delete claim "+name, err)
	}
	return true, nil
}

// claimUsed records on the workspace claim of Pod p that its sandbox ended now. A
// failure only leaves the retention an older time: it is not the stop's.
func (r *Runtime) claimUsed(ctx context.Context, p *corev1.Pod) {
	for _, v := range p.Spec.Volumes {
		if v.PersistentVolumeClaim != nil && v.Name == "workspace" {
			_ = r.annotateUsed(context.WithoutCancel(ctx), v.PersistentVolumeClaim.ClaimName, time.Now())
		}
	}
}

// annotateUsed sets the claim's AnnotationLastUsed to t.
func (r *Runtime) annotateUsed(ctx context.Context, name string, t time.Time) error {
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{
		"annotations": map[string]string{AnnotationLastUsed: t.UTC().Format(time.RFC3339Nano)},
	}})
	if err != nil {
		return err
	}
	_, err = r.cs.CoreV1().PersistentVolumeClaims(r.ns).Patch(ctx, name, types.MergePatchType, patch, metav1.PatchOptions{})
	if err != nil {
		return apiError("annotate claim "+name, err)
	}
	return nil
}

// claimOf is the claim name of a folder path Derive or Folders gave: a chat's claim as a
// cold create names it, or one claimed from the warm pool.
func claimOf(path string) (string, error) {
	name, ok := strings.CutPrefix(path, claimPrefix)
	if !ok || (!strings.HasPrefix(name, "sandboxd-ws-") && !strings.HasPrefix(name, poolNamePrefix)) {
		return "", fmt.Errorf("kube: %q is no workspace claim: %w", path, sandbox.ErrInvalid)
	}
	return name, nil
}

// parseClaimName reads the tenant and chat of a name ClaimName made.
func parseClaimName(name string) (tenant string, chatID uuid.UUID, ok bool) {
	rest, found := strings.CutPrefix(name, "sandboxd-ws-")
	if !found || len(rest) < 36 {
		return "", uuid.Nil, false
	}
	chatID, err := uuid.Parse(rest[:36])
	if err != nil {
		return "", uuid.Nil, false
	}
	if hexTenant, more := strings.CutPrefix(rest[36:], "-"); more {
		b, err := hex.DecodeString(hexTenant)
		if err != nil {
			return "", uuid.Nil, false
		}
		tenant = string(b)
	} else if rest[36:] != "" {
		return "", uuid.Nil, false
	}
	return tenant, chatID, ClaimName(tenant, chatID) == name
}

// pooledChatClaim returns the workspace claim of tenant's chat when it is one the chat
// claimed from the warm pool (named by the pool); being removed or not.
func (r *Runtime) pooledChatClaim(ctx context.Context, tenant string, chatID uuid.UUID) (string, bool, error) {
	sel := labels.SelectorFromSet(labels.Set{LabelManagedBy: ManagedBy, LabelChatID: chatID.String()}).String()
	list, err := r.cs.CoreV1().PersistentVolumeClaims(r.ns).List(ctx, metav1.ListOptions{LabelSelector: sel})
	if err != nil {
		return "", false, apiError("list claims of chat "+chatID.String(), err)
	}
	for _, c := range list.Items {
		if strings.HasPrefix(c.Name, poolNamePrefix) && sameTenant(c.Annotations[AnnotationTenant], tenant) {
			return c.Name, true, nil
		}
	}
	return "", false, nil
}
