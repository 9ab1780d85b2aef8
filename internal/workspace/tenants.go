package workspace

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// TenantsDir is the folder of the volume root that holds each tenant's part but the
// default tenant's: <root>/.tenants/<tenant>. A tenant's workspaces are the direct
// children of its part, as the default tenant's are of the root itself (which keeps the
// layout it always had), so no tenant's folder lies in another's. No workspace path of
// the root may be this folder: Check, CheckCreatable and Ensure refuse it.
const TenantsDir = ".tenants"

// Tenant returns the Root of the tenant's part, <root>/.tenants/<tenant>, making it (and
// <root>/.tenants) with mode 0711 when missing: a folder that only lets the way through,
// so no sandbox user lists another tenant's workspaces. Both must be real directories,
// not links. name must be a tenant name: not empty, no "/", not starting with ".".
func (r *Root) Tenant(name string) (*Root, error) {
	part, ok := r.TenantPart(name)
	if !ok {
		return nil, fmt.Errorf("workspace: %q is not a tenant name", name)
	}
	root, err := r.open()
	if err != nil {
		return nil, err
	}
	defer root.Close()
	for _, rel := range []string{TenantsDir, filepath.Join(TenantsDir, name)} {
		if err := root.Mkdir(rel, 0o711); err != nil && !errors.Is(err, fs.ErrExist) {
			return nil, fmt.Errorf("workspace: create %s: %w", filepath.Join(r.dir, rel), err)
		}
		fi, err := root.Lstat(rel)
		if err != nil {
			return nil, fmt.Errorf("workspace: %s: %w", filepath.Join(r.dir, rel), err)
		}
		if !fi.IsDir() { // a link is no directory to Lstat
			return nil, fmt.Errorf("workspace: %s is not a directory", filepath.Join(r.dir, rel))
		}
	}
	return part, nil
}

// TenantPart returns the Root of the tenant's part as Tenant does, but neither makes nor
// checks anything on disk; false when name is not a tenant name.
func (r *Root) TenantPart(name string) (*Root, bool) {
	if name == "" || strings.ContainsAny(name, "/\x00") || strings.HasPrefix(name, ".") {
		return nil, false
	}
	return &Root{dir: filepath.Join(r.dir, TenantsDir, name)}, true
}

// TenantOf returns the tenant whose part holds path (<root>/.tenants/<tenant>/...), or
// "" when path is not in a tenant's part. It looks at the name only.
func (r *Root) TenantOf(path string) string {
	rel, err := filepath.Rel(r.dir, filepath.Clean(path))
	if err != nil {
		return ""
	}
	rest, ok := strings.CutPrefix(rel, TenantsDir+"/")
	if !ok {
		return ""
	}
	name, _, _ := strings.Cut(rest, "/")
	return name
}

// Tenants lists the tenants that have a part in the root.
func (r *Root) Tenants() ([]string, error) {
	entries, err := os.ReadDir(filepath.Join(r.dir, TenantsDir))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("workspace: list %s: %w", filepath.Join(r.dir, TenantsDir), err)
	}
	var out []string
	for _, e := range entries {
		if e.IsDir() && !strings.HasPrefix(e.Name(), ".") { // ReadDir does not follow links
			out = append(out, e.Name())
		}
	}
	return out, nil
}
