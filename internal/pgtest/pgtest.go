// Package pgtest gives tests a fresh, empty PostgreSQL database on a throwaway server.
// It is imported by _test.go files only.
//
// The server is the one named by SANDBOXD_TEST_PG_DSN (as .ci/run sets it) or, without
// that variable, a cluster started once per test binary with initdb and pg_ctl in a temp
// folder on a free loopback port, and stopped when the binary's tests end (see Main).
// Without PostgreSQL binaries the tests skip, except with CI=true, where they fail.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// EnvDSN names the variable holding the DSN of an existing server to test against. The
// DSN's user must be allowed to create databases.
const EnvDSN = "SANDBOXD_TEST_PG_DSN"

var server struct {
	sync.Mutex
	main    bool     // Main wraps this binary's tests: a started cluster is stopped at the end
	cluster *cluster // started by this binary, if any
	dsn     string   // admin DSN of the server
	err     error    // why there is no server
	skip    bool     // err means "no PostgreSQL here", not "PostgreSQL is broken"
}

// Main wraps the tests of a package that uses DSN so that a cluster it starts is stopped
// when they end:
//
//	func TestMain(m *testing.M) { goleak.VerifyTestMain(pgtest.Main(m)) }
//
// or os.Exit(pgtest.Main(m).Run()).
func Main(m interface{ Run() int }) interface{ Run() int } { return runner{m} }

type runner struct{ m interface{ Run() int } }

func (r runner) Run() int {
	server.Lock()
	server.main = true
	server.Unlock()
	code := r.m.Run()
	server.Lock()
	defer server.Unlock()
	if server.cluster != nil {
		if err := server.cluster.stop(); err != nil {
			fmt.Fprintf(os.Stderr, "pgtest: stop throwaway PostgreSQL: %v\n", err)
			if code == 0 {
				code = 1
			}
		}
		server.cluster = nil
	}
	return code
}

// DSN returns the DSN of a new, empty database, dropped when t ends. Register it before
// the pools that use it, so that their t.Cleanup (which runs first) closes them before the
// database is dropped.
func DSN(t testing.TB) string {
	t.Helper()
	admin := adminDSN(t)
	name := "sandboxd_test_" + randomHex(8)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, admin)
	if err != nil {
		t.Fatalf("pgtest: connect to %s: %v", redact(admin), err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		t.Fatalf("pgtest: create database %s: %v", name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, admin)
		if err != nil {
			t.Errorf("pgtest: drop database %s: %v", name, err)
			return
		}
		defer conn.Close(context.Background())
		if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
			t.Errorf("pgtest: drop database %s: %v", name, err)
		}
	})
	dsn, err := withDatabase(admin, name)
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	return dsn
}

// Pool returns a pool on dsn, closed when t ends.
func Pool(t testing.TB, dsn string) *pgxpool.Pool {
	t.Helper()
	pool, err := pgxpool.New(context.Background(), dsn)
	if err != nil {
		t.Fatalf("pgtest: pgxpool.New: %v", err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// adminDSN returns the DSN of the server, starting a cluster on first use if need be.
func adminDSN(t testing.TB) string {
	t.Helper()
	server.Lock()
	defer server.Unlock()
	if server.dsn == "" && server.err == nil {
		server.dsn, server.skip, server.err = findServer()
	}
	switch {
	case server.err == nil:
		return server.dsn
	case server.skip && os.Getenv("CI") != "true":
		t.Skipf("pgtest: %v (set %s, or install PostgreSQL)", server.err, EnvDSN)
	}
	t.Fatalf("pgtest: %v", server.err)
	return ""
}

func findServer() (dsn string, skip bool, err error) {
	if dsn := os.Getenv(EnvDSN); dsn != "" {
		return dsn, false, nil
	}
	bin, err := binDir()
	if err != nil {
		return "", true, err
	}
	if !server.main {
		return "", false, errors.New("no " + EnvDSN + " and no pgtest.Main in this package's TestMain to stop a throwaway cluster")
	}
	c, err := startCluster(bin)
	if err != nil {
		return "", false, fmt.Errorf("start throwaway PostgreSQL: %w", err)
	}
	server.cluster = c
	return c.dsn, false, nil
}

// binDir finds initdb and pg_ctl: PG_BIN, else the newest /usr/lib/postgresql/*/bin.
func binDir() (string, error) {
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
	return "", errors.New("no PostgreSQL binaries (initdb, pg_ctl) in PG_BIN or /usr/lib/postgresql/*/bin")
}

func version(binDir string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return n
}

type cluster struct {
	bin, dir string
	cred     *syscall.Credential // run as this user (initdb refuses root)
	dsn      string
}

func startCluster(bin string) (*cluster, error) {
	dir, err := os.MkdirTemp("", "sandboxd-pgtest-")
	if err != nil {
		return nil, err
	}
	c := &cluster{bin: bin, dir: dir}
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			_ = os.RemoveAll(dir)
			return nil, fmt.Errorf("running as root needs the postgres user: %w", err)
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

func (c *cluster) stop() error {
	err := c.run("pg_ctl", "-D", filepath.Join(c.dir, "data"), "-m", "immediate", "-w", "stop")
	return errors.Join(err, os.RemoveAll(c.dir))
}

func (c *cluster) run(name string, args ...string) error {
	cmd := exec.Command(filepath.Join(c.bin, name), args...)
	cmd.Dir = c.dir
	if c.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: c.cred}
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%s: %w\n%s", name, err, out)
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

// withDatabase returns dsn naming database name instead of its own.
func withDatabase(dsn, name string) (string, error) {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err != nil {
			return "", fmt.Errorf("parse %s: %w", EnvDSN, err)
		}
		u.Path = "/" + name
		return u.String(), nil
	}
	return dsn + " dbname=" + name, nil // keyword/value: the last dbname wins
}

func redact(dsn string) string {
	if u, err := url.Parse(dsn); err == nil && u.User != nil {
		if _, ok := u.User.Password(); ok {
			u.User = url.UserPassword(u.User.Username(), "xxx")
		}
		return u.String()
	}
	return "the server"
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
