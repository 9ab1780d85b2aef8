package docker

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"regexp"
	"strings"
	"sync"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/google/uuid"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"
	"go.opentelemetry.io/otel/metric"

	"github.com/sandboxd/sandboxd/internal/lifecycle"
	"github.com/sandboxd/sandboxd/internal/poolset"
	"github.com/sandboxd/sandboxd/internal/sandbox"
)

// The warm pool: see the package doc. poolset.Pool keeps the ready lists (a container is
// in one at most once and leaves it before it is handed out or removed). Invariant, kept
// here: a container is ready only while its name is a pool name and its folder is in
// .pool; handOut renames both only after it left its ready list.

// Labels of pooled containers.
const (
	LabelPool      = "sandboxd.pool"       // the profile a pooled container was made for
	LabelPoolOwner = "sandboxd.pool-owner" // the pool (one per process run) that made it
)

const (
	// DefaultPoolCheckInterval is how often the pool looks at its containers by default.
	DefaultPoolCheckInterval = 10 * time.Second
)

// pool is the Runtime's warm pool (see above): the refill loops, the ready lists, the
// claims and the instruments are poolset's; making, checking, handing out and removing
// containers and folders are here. It is safe for concurrent use.
type pool struct {
	*poolset.Pool[member]
	rt    *Runtime
	owner string

	mu     sync.Mutex
	unlock func(remove bool) // releases <owner>.lock
}

// profilePool is one profile's share of the pool.
type profilePool = poolset.Profile[member]

// member is a ready pooled container and its folder's name in .pool.
type member struct{ id, folder string }

func newPool(r *Runtime, cfg Config, mp metric.MeterProvider, log *slog.Logger) (*pool, error) {
	p := &pool{rt: r, owner: randomHex(8)}
	interval := cfg.PoolCheckInterval
	if interval <= 0 {
		interval = DefaultPoolCheckInterval
	}
	var err error
	p.Pool, err = poolset.NewPool(poolset.Config[member]{
		Profiles:        r.profiles,
		Meter:           mp.Meter("github.com/sandboxd/sandboxd/internal/docker"),
		MissReasons:     missReasons,
		Interval:        interval,
		Log:             log,
		LogStoppedFills: true, // what make could not remove is named there
		ID:              func(m member) string { return m.id },
		Make:            p.make,
		Dead:            p.dead,
		Destroy:         p.destroy,
	})
	if err != nil {
		return nil, err
	}
	return p, nil
}

// StartPool starts the warm pool: it takes the pool's lock in <root>/.pool, removes the
// pool containers and folders that a previous run of this instance left (those whose pool
// holds no lock any more), then fills every profile's pool in the background and checks
// its containers every Config.PoolCheckInterval until DrainPool. With no profile pooled
// it only removes the leftovers. An error taking the lock means no pool (the error says
// why); an error removing leftovers is returned but the pool runs.
func (r *Runtime) StartPool(ctx context.Context) error {
	p := r.pool
	if err := p.Start(); err != nil {
		return fmt.Errorf("docker: pool: %w", err)
	}
	unlock, ok, err := r.root.LockPooled(p.owner+".lock", true)
	if err == nil && !ok {
		err = errors.New("lock held by another pool")
	}
	if err != nil {
		return fmt.Errorf("docker: pool: %w", err)
	}
	leftovers := p.removeLeftovers(ctx, false)

	p.mu.Lock()
	p.unlock = unlock
	p.mu.Unlock()
	p.Run(ctx) // nothing when drained while we cleaned up
	return leftovers
}

// DrainPool stops the pool and removes every container and folder it has not handed out,
// waiting for claims in progress first. Creates after it are cold. It is idempotent.
func (r *Runtime) DrainPool(ctx context.Context) error {
	p := r.pool
	if !p.Stop() {
		return nil
	}
	p.mu.Lock()
	unlock := p.unlock
	p.mu.Unlock()
	if unlock == nil { // never started, or drained while it started
		return nil
	}
	err := p.removeLeftovers(ctx, true)
	unlock(err == nil)
	return err
}

// make creates and starts one pooled container of pp's profile.
func (p *pool) make(ctx context.Context, pp *profilePool) (member, error) {
	r := p.rt
	suffix := randomHex(6)
	folder := p.owner + "-" + suffix
	if err := r.root.CheckFree(r.minFree); err != nil {
		return member{}, fmt.Errorf("docker: pool: %w", err)
	}
	dir, err := r.root.MakePooled(folder, pp.Profile.UID, pp.Profile.GID)
	if err != nil {
		return member{}, fmt.Errorf("docker: pool: %w", err)
	}
	cfg := r.containerConfig(lifecycle.CreateSpec{}, pp.Profile)
	cfg.Labels = r.labels(map[string]string{
		LabelPool:      pp.Name,
		LabelPoolOwner: p.owner,
	})
	name := "sandboxd-pool-" + nameSafe(pp.Name) + "-" + folder
	work := ctx
	// Neither step is cut off when the pool ends (DrainPool cancels ctx): a create the
	// client gave up on may still finish in the engine after the drain has listed what to
	// remove, and a container left Created would stay behind. Both are bounded instead,
	// and whatever fails is removed.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), teardownTimeout)
	defer cancel()
	hc, err := r.hostConfig(pp.Profile, dir)
	if err == nil {
		err = r.withImageCommand(ctx, cfg)
	}
	if err != nil {
		return member{}, errors.Join(fmt.Errorf("docker: pool: %w", err), r.root.RemovePooled(folder))
	}
	created, err := r.cli.ContainerCreate(ctx, client.ContainerCreateOptions{
		Name: name, Config: cfg, HostConfig: hc,
	})
	if err != nil {
		err = fmt.Errorf("docker: pool: create %s: %w", name, engineError("create", err))
		// The engine may have made it though the answer was lost: remove it by its name.
		return member{}, errors.Join(err, gone(r.remove(ctx, name)), r.root.RemovePooled(folder))
	}
	m := member{id: created.ID, folder: folder}
	if r.beforeStart != nil {
		r.beforeStart(work, m.id)
	}
	if _, err := r.cli.ContainerStart(ctx, m.id, client.ContainerStartOptions{}); err != nil {
		err = fmt.Errorf("docker: pool: start %s: %w", name, engineError("start", err))
		return member{}, errors.Join(err, p.destroy(ctx, m))
	}
	return m, nil
}

// dead returns the ready containers that are no longer running (or gone).
func (p *pool) dead(ctx context.Context, _ *profilePool, ready []member) []member {
	var dead []member
	for _, m := range ready {
		res, err := p.rt.cli.ContainerInspect(ctx, m.id, client.ContainerInspectOptions{})
		if err != nil && !cerrdefs.IsNotFound(err) {
			continue // the engine is unwell: judge nothing
		}
		if err == nil && res.Container.State != nil && res.Container.State.Running {
			continue
		}
		dead = append(dead, m)
	}
	return dead
}

// destroy removes a pooled container and its folder, even when ctx has ended.
func (p *pool) destroy(ctx context.Context, m member) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), teardownTimeout)
	defer cancel()
	return errors.Join(p.rt.remove(ctx, m.id), p.rt.root.RemovePooled(m.folder))
}

// claim hands out a ready pooled container as the RUNNING sandbox of spec, or reports
// false: then nothing of the chat changed and a cold create must follow. See the top of
// this file for when it applies.
func (p *pool) claim(ctx context.Context, spec lifecycle.CreateSpec) (sandbox.Session, bool) {
	cold := func() string {
		if spec.Tenant != "" {
			// A claimed container carries no tenant label (it was made before any tenant
			// asked) and is adopted as the default tenant's; other tenants' are cold.
			return "tenant"
		}
		derived := p.rt.root.Derive(spec.ChatID)
		if v := spec.VolumeHostPath; strings.TrimSpace(v) != "" && v != derived {
			return "volume"
		}
		if _, err := os.Lstat(derived); !errors.Is(err, fs.ErrNotExist) {
			return "folder_exists"
		}
		return ""
	}
	s, ok := p.Claim(ctx, spec, cold, func(ctx context.Context, pp *profilePool, m member) error {
		err := p.handOut(ctx, pp, m, spec)
		if errors.Is(err, fs.ErrExist) {
			return poolset.Cold("folder_exists")
		}
		return err
	})
	if ok {
		s.VolumeHostPath = spec.VolumeHostPath
	}
	return s, ok
}

// handOut makes m the sandbox of spec: it checks that m runs, renames its folder to the
// chat's and the container to the session's name. On failure m is back in the pool
// (when it was not touched) or removed, and the chat's folder is as it was.
func (p *pool) handOut(ctx context.Context, pp *profilePool, m member, spec lifecycle.CreateSpec) error {
	r := p.rt
	res, err := r.cli.ContainerInspect(ctx, m.id, client.ContainerInspectOptions{})
	switch {
	case err != nil:
		err = engineError("inspect "+m.id, err)
	case res.Container.State == nil || !res.Container.State.Running:
		err = fmt.Errorf("docker: pool: container %s is not running", m.id)
	}
	if err != nil {
		return errors.Join(err, p.destroy(ctx, m))
	}
	if _, err := r.root.ClaimPooled(m.folder, spec.ChatID); err != nil {
		if errors.Is(err, fs.ErrExist) { // the chat's folder appeared: m is unharmed
			p.PutBack(ctx, pp, m)
			return err
		}
		return errors.Join(err, p.destroy(ctx, m))
	}
	name := ContainerName(spec.ChatID, spec.SessionID)
	if _, err := r.cli.ContainerRename(ctx, m.id, client.ContainerRenameOptions{NewName: name}); err != nil {
		err = fmt.Errorf("docker: pool: rename %s to %s: %w", m.id, name, engineError("rename", err))
		// The rename may have happened all the same: m goes, by id, whatever its name.
		if uerr := r.root.UnclaimPooled(m.folder, spec.ChatID); uerr != nil {
			return errors.Join(err, uerr, p.destroy(ctx, member{id: m.id}))
		}
		return errors.Join(err, p.destroy(ctx, m))
	}
	return nil
}

// missReasons are the reasons a pooled profile's create was cold.
var missReasons = []string{"volume", "tenant", "folder_exists", "empty", "error"}

// removeLeftovers removes the unclaimed pool containers of this instance and the .pool
// entries that belong to pools whose lock nobody holds (dead pools) or, when own is set,
// to this pool. It skips nothing it cannot judge.
func (p *pool) removeLeftovers(ctx context.Context, own bool) error {
	r := p.rt
	verdicts := map[string]bool{} // owner → remove its things
	var unlocks []func(bool)
	defer func() {
		for _, u := range unlocks {
			u(true)
		}
	}()
	var errs []error
	doomed := func(owner string) bool {
		if owner == p.owner {
			return own
		}
		if v, ok := verdicts[owner]; ok {
			return v
		}
		unlock, held, err := r.root.LockPooled(owner+".lock", false)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			verdicts[owner] = true
		case err != nil:
			errs = append(errs, err)
			verdicts[owner] = false
		case held:
			unlocks = append(unlocks, unlock)
			verdicts[owner] = true
		default:
			verdicts[owner] = false // a live pool: another process's
		}
		return verdicts[owner]
	}

	res, err := r.cli.ContainerList(ctx, client.ContainerListOptions{
		All: true,
		Filters: client.Filters{}.Add("label",
			LabelManagedBy+"="+ManagedBy, LabelInstance+"="+r.instance, LabelPool),
	})
	if err != nil {
		errs = append(errs, engineError("list pool containers", err))
	} else {
		for _, c := range res.Items {
			if _, _, claimed := claimedName(c.Names); claimed || !doomed(c.Labels[LabelPoolOwner]) {
				continue
			}
			if err := r.remove(context.WithoutCancel(ctx), c.ID); err != nil {
				errs = append(errs, err)
			}
		}
	}
	names, err := r.root.Pooled()
	if err != nil {
		errs = append(errs, err)
	}
	for _, name := range names {
		if owner, ok := strings.CutSuffix(name, ".lock"); ok {
			doomed(owner) // a dead pool's lock file goes with its lock, below
			continue
		}
		owner, _, ok := strings.Cut(name, "-")
		if !ok || !doomed(owner) {
			continue
		}
		if err := r.root.RemovePooled(name); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("docker: pool: remove leftovers: %w", err)
	}
	return nil
}

// poolContainer tells Managed how to list a container: an unclaimed pool container is
// skipped (skip), a claimed one is reported with the chat and session of its name.
func poolContainer(c container.Summary) (chatID, sessionID uuid.UUID, pooled, skip bool) {
	if _, ok := c.Labels[LabelPool]; !ok {
		return uuid.Nil, uuid.Nil, false, false
	}
	chatID, sessionID, claimed := claimedName(c.Names)
	return chatID, sessionID, true, !claimed
}

// claimedName parses a name made by ContainerName among names (as the engine lists them,
// with a leading "/").
func claimedName(names []string) (chatID, sessionID uuid.UUID, ok bool) {
	const prefix, idLen = "sandboxd-", 36
	for _, n := range names {
		n = strings.TrimPrefix(n, "/")
		rest, found := strings.CutPrefix(n, prefix)
		if !found || len(rest) != 2*idLen+1 || rest[idLen] != '-' {
			continue
		}
		c, err1 := uuid.Parse(rest[:idLen])
		s, err2 := uuid.Parse(rest[idLen+1:])
		if err1 == nil && err2 == nil && ContainerName(c, s) == n {
			return c, s, true
		}
	}
	return uuid.Nil, uuid.Nil, false
}

var unsafeName = regexp.MustCompile(`[^a-zA-Z0-9_.-]+`)

// nameSafe makes a profile name fit in a container name.
func nameSafe(s string) string {
	s = unsafeName.ReplaceAllString(s, "_")
	if len(s) > 32 {
		s = s[:32]
	}
	return s
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
