// Package kube runs sandboxes as hardened Pods on a Kubernetes cluster. Its Runtime is the
// lifecycle's Runtime, Admitter, Inventory, Executor and Files, as internal/docker's is on
// one Docker engine: one Pod per sandbox, placed by the scheduler, the chat's workspace on
// a PersistentVolumeClaim of its own that outlives the sandbox, commands over the
// pods/exec subresource (WebSocket first, SPDY as fallback), files read and written by
// commands inside the sandbox as its user, reconciliation by label selector, and a warm
// pool of Pods started ahead of demand (pool.go).
//
// Every Pod runs a profile chosen by configuration, never by the client (package
// profile), translated into the Pod's image, RuntimeClass, limits and environment, and
// always: non-root with the profile's uid and gid, a read-only root, no privilege
// escalation, every capability dropped, seccomp RuntimeDefault, no service account token,
// no service links, no host namespace or host path, /tmp as a size-limited memory
// emptyDir, and activeDeadlineSeconds as a backstop the cluster enforces even when no
// sandboxd runs.
package kube

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/google/uuid"
	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/sandboxd/sandboxd/internal/lifecycle"
	"github.com/sandboxd/sandboxd/internal/profile"
	"github.com/sandboxd/sandboxd/internal/sandbox"
)

// Labels every sandbox Pod and workspace claim carries (the names the Docker runtime's
// containers carry). The reconciler sees only Pods with LabelManagedBy=ManagedBy and
// LabelInstance equal to the runtime's instance, and removes only those whose
// LabelRegistry is its registry's (or one it adopted). The agent id, tenant and times,
// which need not be valid label values, are annotations.
const (
	LabelManagedBy      = "sandboxd.managed-by"
	LabelInstance       = "sandboxd.instance"
	LabelChatID         = "sandboxd.chat-id"
	LabelSessionID      = "sandboxd.session-id"
	LabelRegistry       = "sandboxd.registry" // the id of the registry that recorded it
	AnnotationAgentID   = "sandboxd.agent-id"
	AnnotationTenant    = "sandboxd.tenant"     // the tenant whose caller made it (absent: the default)
	AnnotationCreatedAt = "sandboxd.created-at" // the session's creation, RFC 3339 (ns)
	AnnotationExpiresAt = "sandboxd.expires-at" // its expiry when made (a keepalive is not seen here)
	ManagedBy           = "sandboxd"
)

// Defaults of Config.
const (
	DefaultWorkspaceBytes = 1 << 30
	DefaultStopTimeout    = 3 * time.Second
)

// containerName is the name of the sandbox's one container in its Pod.
const containerName = "sandbox"

// teardownTimeout bounds the removal of a half-made Pod, which runs even when the caller
// has gone.
const teardownTimeout = 30 * time.Second

// Config configures a Runtime. Namespace, Instance and Profiles are required.
type Config struct {
	// Kubeconfig is the kubeconfig file to use; empty: the in-cluster service account
	// when sandboxd runs in a Pod, else $KUBECONFIG or ~/.kube/config.
	Kubeconfig string
	// Namespace holds the sandboxes' Pods and claims.
	Namespace string
	// Instance names this sandboxd in the labels of its Pods, so that two services
	// sharing a namespace never reconcile each other's sandboxes. A label value.
	Instance string
	// Registry is the id of the registry that records this service's sandboxes
	// (lifecycle.Binding), carried by each Pod as LabelRegistry; empty: no such label.
	Registry string
	// Profiles are the agents' profiles. A profile's runtime names a RuntimeClass
	// (e.g. gvisor); its network must be "none" or empty: a Pod's network is the
	// cluster's, and what it may reach is for the cluster's NetworkPolicies to say.
	Profiles *profile.Set
	// StorageClass is the class of the workspace claims; empty: the cluster's default.
	StorageClass string
	// WorkspaceBytes is the size each workspace claim asks for (0:
	// DefaultWorkspaceBytes).
	WorkspaceBytes int64
	// StopTimeout is the Pods' terminationGracePeriodSeconds at a stop (rounded up to
	// whole seconds; 0: none).
	StopTimeout time.Duration
	// MaxLifetime, when set, is the Pods' activeDeadlineSeconds: the cluster ends a
	// sandbox that long after it started (a pooled one: after its claim) even when no
	// sandboxd is left to.
	MaxLifetime time.Duration
	// PoolCheckInterval is how often the warm pool checks its Pods (default
	// DefaultPoolCheckInterval); its Lease is renewed as often, but at least every 5 s.
	PoolCheckInterval time.Duration
	// MeterProvider gets the warm pool's metrics (default: none kept).
	MeterProvider metric.MeterProvider
	// Logger gets the warm pool's warnings (default: discarded).
	Logger *slog.Logger
}

// Runtime runs sandboxes as Pods in one namespace. It is safe for concurrent use.
type Runtime struct {
	cs          kubernetes.Interface
	rest        *rest.Config
	ns          string
	instance    string
	registry    string
	profiles    *profile.Set
	class       string
	size        resource.Quantity
	stopSeconds int64
	deadline    int64 // seconds; 0: none
	spdyOnly    bool  // test hook: exec over SPDY, never WebSocket
	pool        *pool // the warm pool (pool.go); holds nothing when no profile is pooled
}

var (
	_ lifecycle.Runtime   = (*Runtime)(nil)
	_ lifecycle.Admitter  = (*Runtime)(nil)
	_ lifecycle.Inventory = (*Runtime)(nil)
	_ lifecycle.Executor  = (*Runtime)(nil)
	_ lifecycle.Files     = (*Runtime)(nil)
)

// New checks cfg and returns a Runtime. It does not contact the cluster (see Ping). A
// missing or unsafe setting is an error.
func New(cfg Config) (*Runtime, error) {
	var problems []error
	if errs := validation.IsValidLabelValue(cfg.Instance); strings.TrimSpace(cfg.Instance) == "" || len(errs) > 0 {
		problems = append(problems, fmt.Errorf("instance %q must be a Kubernetes label value: %s", cfg.Instance, strings.Join(errs, "; ")))
	}
	if errs := validation.IsDNS1123Label(cfg.Namespace); len(errs) > 0 {
		problems = append(problems, fmt.Errorf("namespace %q: %s", cfg.Namespace, strings.Join(errs, "; ")))
	}
	if cfg.Profiles == nil {
		problems = append(problems, errors.New("the agent profiles are required"))
	} else {
		problems = append(problems, checkProfiles(cfg.Profiles)...)
	}
	if cfg.WorkspaceBytes < 0 {
		problems = append(problems, errors.New("the workspace size must be positive"))
	}
	if len(problems) > 0 {
		return nil, fmt.Errorf("kube: config: %w", errors.Join(problems...))
	}
	rc, err := restConfig(cfg.Kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("kube: %w", err)
	}
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("kube: client: %w", err)
	}
	size := cfg.WorkspaceBytes
	if size == 0 {
		size = DefaultWorkspaceBytes
	}
	stop := cfg.StopTimeout
	if stop < 0 {
		stop = DefaultStopTimeout
	}
	r := &Runtime{
		cs:          cs,
		rest:        rc,
		ns:          cfg.Namespace,
		instance:    cfg.Instance,
		registry:    cfg.Registry,
		profiles:    cfg.Profiles,
		class:       cfg.StorageClass,
		size:        *resource.NewQuantity(size, resource.BinarySI),
		stopSeconds: int64((stop + time.Second - 1) / time.Second),
		deadline:    int64((cfg.MaxLifetime + time.Second - 1) / time.Second),
	}
	mp, log := cfg.MeterProvider, cfg.Logger
	if mp == nil {
		mp = metricnoop.NewMeterProvider()
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if r.pool, err = newPool(r, cfg, mp, log); err != nil {
		return nil, fmt.Errorf("kube: %w", err)
	}
	return r, nil
}

// restConfig loads the client configuration: the kubeconfig file given, else the
// in-cluster one, else the usual kubeconfig rules.
func restConfig(kubeconfig string) (*rest.Config, error) {
	var (
		rc  *rest.Config
		err error
	)
	if kubeconfig == "" {
		rc, err = rest.InClusterConfig()
	}
	if kubeconfig != "" || errors.Is(err, rest.ErrNotInCluster) {
		rules := clientcmd.NewDefaultClientConfigLoadingRules()
		rules.ExplicitPath = kubeconfig
		rc, err = clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{}).ClientConfig()
	}
	if err != nil {
		return nil, fmt.Errorf("client configuration: %w", err)
	}
	rc = rest.CopyConfig(rc)
	rc.UserAgent = "sandboxd"
	// Creates of many chats at once must not queue behind client-go's default 5 QPS.
	rc.QPS, rc.Burst = 200, 400
	// The API server warns of every Pod that its name is longer than a hostname may be:
	// the Pods get a hostname of their own (podFor), so the warning says nothing.
	rc.WarningHandler = rest.NoWarnings{}
	return rc, nil
}

// checkProfiles refuses what a Pod cannot honour.
func checkProfiles(set *profile.Set) []error {
	var problems []error
	check := func(name string, p profile.Profile) {
		if p.Network != "none" && p.Network != "" {
			problems = append(problems, fmt.Errorf("%s: network %q: on Kubernetes a sandbox's network is the cluster's (restrict it with a NetworkPolicy); set none", name, p.Network))
		}
		if p.Runtime != "" {
			if errs := validation.IsDNS1123Subdomain(p.Runtime); len(errs) > 0 {
				problems = append(problems, fmt.Errorf("%s: runtime %q is not a RuntimeClass name", name, p.Runtime))
			}
		}
		if p.FilesTmp {
			problems = append(problems, fmt.Errorf("%s: files_tmp is not offered on Kubernetes", name))
		}
	}
	check("agents.default", set.Default())
	for _, agent := range set.Agents() {
		check("agents.profiles."+agent, set.Of(agent))
	}
	return problems
}

// Ping checks that the API server answers. Its error wraps sandbox.ErrUnavailable.
func (r *Runtime) Ping(ctx context.Context) error {
	if _, err := r.cs.CoreV1().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx); err != nil {
		// /readyz may be closed to sandboxd's user: any answer from its own namespace's
		// pods will do.
		if _, err := r.cs.CoreV1().Pods(r.ns).List(ctx, metav1.ListOptions{Limit: 1}); err != nil {
			return apiError("ping", err)
		}
	}
	return nil
}

// Identity names the sandboxes this Runtime manages: the cluster (the UID of its
// kube-system namespace, which lives as long as the cluster), the namespace and the
// instance. Errors wrap sandbox.ErrUnavailable when the cluster cannot be asked.
func (r *Runtime) Identity(ctx context.Context) (string, error) {
	ns, err := r.cs.CoreV1().Namespaces().Get(ctx, metav1.NamespaceSystem, metav1.GetOptions{})
	if err != nil {
		err = apiError("get namespace kube-system", err)
		if !errors.Is(err, sandbox.ErrUnavailable) {
			err = fmt.Errorf("%w: %w", sandbox.ErrUnavailable, err)
		}
		return "", err
	}
	return fmt.Sprintf("kubernetes cluster %s, namespace %s, instance %s", ns.UID, r.ns, r.instance), nil
}

// Admit checks a create request without side effects: the agent must have a profile (or
// fall back to the default one), and no host folder may be asked for: on a cluster the
// workspace is the chat's claim, which sandboxd names. It returns "" (no host folder).
// Its errors wrap sandbox.ErrInvalid.
func (r *Runtime) Admit(_ context.Context, _ string, _ uuid.UUID, agentID, volumeHostPath string) (string, error) {
	if _, err := r.profiles.Lookup(agentID); err != nil {
		return "", fmt.Errorf("kube: admit: %w", err)
	}
	if strings.TrimSpace(volumeHostPath) != "" {
		return "", fmt.Errorf("kube: admit: volume_host_path %q: on Kubernetes the workspace is the chat's own volume claim; omit volume_host_path: %w",
			volumeHostPath, sandbox.ErrInvalid)
	}
	return "", nil
}

// Resolve returns what Admit returns for a request it accepts ("": no host folder), when
// the agent has a profile and no host folder is asked for.
func (r *Runtime) Resolve(_ string, _ uuid.UUID, agentID, volumeHostPath string) (string, bool) {
	if _, err := r.profiles.Lookup(agentID); err != nil || strings.TrimSpace(volumeHostPath) != "" {
		return "", false
	}
	return "", true
}

// WorkspaceMount returns where the agent's sandboxes see their workspace.
func (r *Runtime) WorkspaceMount(agentID string) string { return r.profiles.Of(agentID).Workspace }

// ExtendsOnActivity reports whether exec and file calls extend the TTL of the agent's
// sandboxes.
func (r *Runtime) ExtendsOnActivity(agentID string) bool {
	return r.profiles.ExtendsOnActivity(agentID)
}

// apiError wraps an API error with op, translating it into the domain's sentinels:
// NotFound into sandbox.ErrNotFound, an invalid object into sandbox.ErrInvalid, an
// unreachable, overloaded or refusing API server into sandbox.ErrUnavailable.
func apiError(op string, err error) error {
	var netErr net.Error
	switch {
	case apierrors.IsNotFound(err):
		return fmt.Errorf("kube: %s: %w: %w", op, sandbox.ErrNotFound, err)
	case apierrors.IsInvalid(err), apierrors.IsBadRequest(err):
		return fmt.Errorf("kube: %s: %w: %w", op, sandbox.ErrInvalid, err)
	case apierrors.IsServiceUnavailable(err), apierrors.IsServerTimeout(err), apierrors.IsTimeout(err),
		apierrors.IsTooManyRequests(err), apierrors.IsInternalError(err), apierrors.IsForbidden(err),
		apierrors.IsUnauthorized(err), errors.Is(err, context.DeadlineExceeded), errors.As(err, &netErr):
		return fmt.Errorf("kube: %s: %w: %w", op, sandbox.ErrUnavailable, err)
	}
	return fmt.Errorf("kube: %s: %w", op, err)
}

// profileOf is the profile of a sandbox that exists.
func (r *Runtime) profileOf(agentID string) profile.Profile { return r.profiles.Of(agentID) }
