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
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/sandboxd/sandboxd/internal/testing/pgcluster"
)

// EnvDSN names the variable holding the DSN of an existing server to test against. The
// DSN's user must be allowed to create databases.
const EnvDSN = "SANDBOXD_TEST_PG_DSN"

var server struct {
	sync.Mutex
	main    bool               // Main wraps this binary's tests: a started cluster is stopped at the end
	cluster *pgcluster.Cluster // started by this binary, if any
	dsn     string             // admin DSN of the server
	err     error              // why there is no server
	skip    bool               // err means "no PostgreSQL here", not "PostgreSQL is broken"
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
		if err := server.cluster.Stop(); err != nil {
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
	bin, err := pgcluster.BinDir()
	if err != nil {
		return "", true, err
	}
	if !server.main {
		return "", false, errors.New("no " + EnvDSN + " and no pgtest.Main in this package's TestMain to stop a throwaway cluster")
	}
	c, err := pgcluster.Start(bin, "sandboxd-pgtest-")
	if err != nil {
		return "", false, fmt.Errorf("start throwaway PostgreSQL: %w", err)
	}
	server.cluster = c
	return c.DSN(), false, nil
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
