package profile

import (
	"errors"
	"fmt"
	"maps"
	"path"
	"strconv"
	"strings"

	"github.com/sandboxd/sandboxd/internal/egress"
)

// resolve fills sp's unset fields with the defaults and checks the result: every problem
// is reported, joined.
func resolve(sp Spec) (Profile, error) {
	var problems []error
	bad := func(format string, a ...any) { problems = append(problems, fmt.Errorf(format, a...)) }

	mem, err := parseSize("memory", sp.Memory)
	if err != nil {
		problems = append(problems, err)
	}
	tmpfs, err := parseSize("tmpfs", sp.Tmpfs)
	if err != nil {
		problems = append(problems, err)
	}
	var quota int64
	if q := strings.TrimSpace(sp.WorkspaceMaxBytes); q == "none" || q == "0" {
		// A listed profile's way out of the default's bound, files included.
		sp.WorkspaceMaxFiles = 0
	} else if quota, err = parseSize("workspace_max_bytes", sp.WorkspaceMaxBytes); err != nil {
		problems = append(problems, err)
	}
	logBytes, err := parseSize("log max_size", sp.Log.MaxSize)
	if err != nil {
		problems = append(problems, err)
	}
	if sp.CPUs < 0 {
		bad("cpus must be >= 0, got %g", sp.CPUs)
	}
	if sp.PIDs < 0 {
		bad("pids must be >= 0, got %d", sp.PIDs)
	}
	p := Profile{
		Image:            orDefault(sp.Image, DefaultImage),
		MemoryBytes:      orDefault(mem, DefaultMemoryBytes),
		NanoCPUs:         orDefault(int64(sp.CPUs*1e9), DefaultNanoCPUs),
		PIDs:             orDefault(sp.PIDs, DefaultPIDs),
		Network:          orDefault(sp.Network, DefaultNetwork),
		Env:              maps.Clone(sp.Env),
		Workspace:        orDefault(sp.Workspace, DefaultWorkspace),
		User:             orDefault(sp.User, DefaultUser),
		TmpfsBytes:       orDefault(tmpfs, DefaultTmpfsBytes),
		ExtendOnActivity: sp.ExtendOnActivity != nil && *sp.ExtendOnActivity,
		FilesTmp:         sp.FilesTmp != nil && *sp.FilesTmp,
		Runtime:          sp.Runtime,
		LogDriver:        orDefault(sp.Log.Driver, DefaultLogDriver),
		LogMaxBytes:      orDefault(logBytes, DefaultLogMaxBytes),
		LogMaxFiles:      orDefault(sp.Log.MaxFile, DefaultLogMaxFiles),
		Pool:             Pool{Min: sp.Pool.Min, Max: orDefault(sp.Pool.Max, sp.Pool.Min)},

		WorkspaceMaxBytes: quota,
		WorkspaceMaxFiles: sp.WorkspaceMaxFiles,
	}
	switch p.LogDriver {
	case LogJSONFile, LogLocal:
		if p.LogMaxBytes > MaxLogBytes {
			bad("log max_size %q is over %d MiB", sp.Log.MaxSize, MaxLogBytes>>20)
		}
		if p.LogMaxFiles < 1 || p.LogMaxFiles > MaxLogFiles {
			bad("log max_file %d: want 1 to %d", sp.Log.MaxFile, MaxLogFiles)
		}
	case LogNone:
		if sp.Log.MaxSize != "" || sp.Log.MaxFile != 0 {
			bad("log driver none keeps nothing: max_size and max_file do not apply")
		}
		p.LogMaxBytes, p.LogMaxFiles = 0, 0
	default:
		bad("log driver %q: use %s or %s (bounded on the host) or %s", p.LogDriver, LogJSONFile, LogLocal, LogNone)
	}

	if mem != 0 && mem < minMemoryBytes {
		bad("memory %q is below the least a sandbox may get, %d MiB", sp.Memory, minMemoryBytes>>20)
	}
	if p.Network == "host" || strings.HasPrefix(p.Network, "container:") {
		bad("network %q shares a namespace", p.Network)
	}
	if p.Network == NetworkEgress {
		if p.Egress, err = egress.NewPolicy(sp.Egress.Allow, sp.Egress.Deny); err != nil {
			problems = append(problems, err)
		}
	} else if len(sp.Egress.Allow)+len(sp.Egress.Deny) > 0 {
		bad("egress rules need network %q, not %q", NetworkEgress, p.Network)
	}
	if !path.IsAbs(p.Workspace) || path.Clean(p.Workspace) == "/" {
		bad("workspace %q must be an absolute path below / in the sandbox", p.Workspace)
	}
	if strings.ContainsAny(p.Runtime, " \t\n/") {
		bad("runtime %q is not a runtime name", p.Runtime)
	}
	if p.FilesTmp && p.Runtime != "" && p.Runtime != "runc" {
		// The file API reaches /tmp through /proc/<pid>/root; under a runtime with a
		// kernel of its own (gVisor), that is not the sandbox's /tmp.
		bad("files_tmp needs the runc runtime, not %q", p.Runtime)
	}
	switch {
	case quota != 0 && quota < MinWorkspaceBytes:
		bad("workspace_max_bytes %q is below the least a workspace may get, %d MiB", sp.WorkspaceMaxBytes, MinWorkspaceBytes>>20)
	case sp.WorkspaceMaxFiles < 0 || sp.WorkspaceMaxFiles > 1<<31:
		bad("workspace_max_files must be 0 to 2^31, got %d", sp.WorkspaceMaxFiles)
	case sp.WorkspaceMaxFiles != 0 && quota == 0:
		bad("workspace_max_files needs workspace_max_bytes (the files are bounded by the workspace's image)")
	case quota != 0 && sp.Pool.Min > 0:
		// A pooled sandbox's folder is made before any chat claims it, and a claim renames
		// it into place, which a mounted image does not allow.
		bad("workspace_max_bytes cannot be combined with a pool (pool.min %d)", sp.Pool.Min)
	}
	if p.UID, p.GID, err = parseUser(p.User); err != nil {
		problems = append(problems, err)
	}
	if sp.Pool.Min < 0 || sp.Pool.Max < 0 || p.Pool.Max < p.Pool.Min || p.Pool.Max > MaxPool || p.Pool.Min > MaxPool {
		bad("pool min %d, max %d: want 0 <= min <= max <= %d (max 0: min)", sp.Pool.Min, sp.Pool.Max, MaxPool)
	}
	return p, errors.Join(problems...)
}

// orDefault is v, or def when v is unset (zero).
func orDefault[T comparable](v, def T) T {
	fill(&v, def)
	return v
}

// parseSize reads a number of bytes with an optional k, m, g or t suffix (binary units;
// "b", "i" and "ib" tolerated: 512m, 512MiB, 1G). Empty is 0 (unset).
func parseSize(what, size string) (int64, error) {
	s := strings.ToLower(strings.TrimSpace(size))
	if s == "" {
		return 0, nil
	}
	s = strings.TrimSuffix(strings.TrimSuffix(s, "b"), "i")
	mult := int64(1)
	if n := len(s); n > 0 {
		if i := strings.IndexByte("kmgt", s[n-1]); i >= 0 {
			mult = 1 << (10 * (i + 1))
			s = s[:n-1]
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 || n > (1<<62)/mult {
		return 0, fmt.Errorf("%s %q is not a size such as 512m or 2g", what, size)
	}
	return n * mult, nil
}

// parseUser reads a numeric "uid[:gid]" and refuses root and the root group.
func parseUser(s string) (uid, gid int, err error) {
	us, gs, hasGID := strings.Cut(s, ":")
	uid, err = strconv.Atoi(us)
	if err == nil && hasGID {
		gid, err = strconv.Atoi(gs)
	} else {
		gid = uid
	}
	switch {
	case err != nil || uid < 0 || gid < 0:
		return 0, 0, fmt.Errorf("user %q must be a numeric uid:gid", s)
	case uid == 0:
		return 0, 0, fmt.Errorf("user %q is root", s)
	case gid == 0:
		// The root group owns files in images and, through the workspace, on the host.
		return 0, 0, fmt.Errorf("user %q is in the root group", s)
	}
	return uid, gid, nil
}
