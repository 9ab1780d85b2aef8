// Package pgcluster starts throwaway PostgreSQL clusters, for tests (internal/pgtest) and
// the benchmark tool: initdb and pg_ctl in a temp folder, a free loopback port, no
// durability, everything removed by Stop. It is not part of the service.
package pgcluster

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
)

// ErrNoBinaries is returned by BinDir (and Start) when initdb and pg_ctl cannot be found.
var ErrNoBinaries = errors.New("no PostgreSQL binaries (initdb, pg_ctl) in PG_BIN or /usr/lib/postgresql/*/bin")

// BinDir finds initdb and pg_ctl: $PG_BIN, else the newest /usr/lib/postgresql/*/bin.
func BinDir() (string, error) {
	candidates := []string{os.Getenv("PG_BIN")}
	if found, _ := filepath.Glob("/usr/lib/postgresql/*/bin"); len(found) > 0 {
		slices.SortFunc(found, func(a, b string) int { return version(b) - version(a) })
		candidates = append(candidates, found...)
	}
	for _, dir := range candidates {
		if dir == "" {
			continue
		}
		if _, err := os.Stat(filepath.Join(dir, "initdb")); err == nil {
			return dir, nil
		}
	}
	return "", ErrNoBinaries
}

func version(binDir string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return n
}

// Cluster is a running throwaway PostgreSQL.
type Cluster struct {
	bin, dir string
	cred     *syscall.Credential // run as this user (initdb refuses root)
	dsn      string
}

// DSN is the superuser's DSN of the cluster's postgres database.
func (c *Cluster) DSN() string { return c.dsn }

// Start initialises and starts a cluster with the binaries of bin (see BinDir). As root
// it runs them as the postgres user, since initdb refuses root. The folder is made with
// prefix in the system's temp folder.
func Start(bin, prefix string) (*Cluster, error) {
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		return nil, err
	}
	c := &Cluster{bin: bin, dir: dir}
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			_ = os.RemoveAll(dir)
			return nil, fmt.Errorf("pgcluster: running as root needs the postgres user: %w", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		c.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		if err := os.Chown(dir, uid, gid); err != nil {
			_ = os.RemoveAll(dir)
			return nil, err
		}
	}
	data := filepath.Join(dir, "data")
	if err := c.run("initdb", "-D", data, "-U", "postgres", "-A", "trust", "-E", "UTF8",
		"--locale=C", "--no-sync", "--no-instructions"); err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	// The port is free when asked; should another process take it before the server
	// binds, try another.
	for attempt := 0; ; attempt++ {
		port, err := freePort()
		if err != nil {
			_ = os.RemoveAll(dir)
			return nil, err
		}
		opts := fmt.Sprintf("-c listen_addresses=127.0.0.1 -p %d -k %s -c fsync=off "+
			"-c synchronous_commit=off -c full_page_writes=off -c max_connections=300", port, dir)
		err = c.run("pg_ctl", "-D", data, "-l", filepath.Join(dir, "log"), "-w", "-t", "60", "-o", opts, "start")
		if err == nil {
			c.dsn = fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", port)
			return c, nil
		}
		if attempt == 2 {
			log, _ := os.ReadFile(filepath.Join(dir, "log"))
			_ = os.RemoveAll(dir)
			return nil, fmt.Errorf("%w\n%s", err, log)
		}
	}
}

// Stop stops the cluster at once and removes its folder.
func (c *Cluster) Stop() error {
	err := c.run("pg_ctl", "-D", filepath.Join(c.dir, "data"), "-m", "immediate", "-w", "stop")
	return errors.Join(err, os.RemoveAll(c.dir))
}

func (c *Cluster) run(name string, args ...string) error {
	cmd := exec.Command(filepath.Join(c.bin, name), args...)
	cmd.Dir = c.dir
	if c.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: c.cred}
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("pgcluster: %s: %w\n%s", name, err, out)
	}
	return nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
