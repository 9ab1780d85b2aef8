package pgstore_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/sandboxd/sandboxd/internal/keylock"
	"github.com/sandboxd/sandboxd/internal/lifecycle"
	"github.com/sandboxd/sandboxd/internal/lifecycletest"
	"github.com/sandboxd/sandboxd/internal/testing/pgtest"
	"github.com/sandboxd/sandboxd/internal/testing/waitfor"
)

// pause stops (SIGSTOP) the server's postmaster, so that no new connection is served, and
// every backend of the database but the admin connection's: the database hangs, neither
// refusing nor answering. The returned function resumes them (also at the test's end).
func pause(t *testing.T, dsn string) (resume func()) {
	t.Helper()
	ctx := context.Background()
	admin := pgtest.Pool(t, dsn)
	conn, err := admin.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	var dataDir string
	if err := conn.QueryRow(ctx, `SELECT setting FROM pg_settings WHERE name = 'data_directory'`).Scan(&dataDir); err != nil {
		t.Fatal(err)
	}
	pidFile, err := os.ReadFile(filepath.Join(dataDir, "postmaster.pid"))
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("the server's postmaster.pid cannot be read, and CI=true: %v", err)
		}
		t.Skipf("the server's postmaster.pid cannot be read (a server elsewhere?): %v", err)
	}
	postmaster, err := strconv.Atoi(strings.SplitN(string(pidFile), "\n", 2)[0])
	if err != nil {
		t.Fatalf("postmaster.pid: %v", err)
	}
	rows, err := conn.Query(ctx, `SELECT pid FROM pg_stat_activity
		WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend'`)
	if err != nil {
		t.Fatal(err)
	}
	pids := []int{postmaster}
	for rows.Next() {
		var pid int
		if err := rows.Scan(&pid); err != nil {
			t.Fatal(err)
		}
		pids = append(pids, pid)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if len(pids) < 2 {
		t.Fatal("the store has no backend to pause")
	}
	resumed := false
	resume = func() {
		if resumed {
			return
		}
		resumed = true
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGCONT)
		}
	}
	t.Cleanup(resume)
	for _, pid := range pids {
		if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
			resume()
			if os.Getenv("CI") == "true" {
				t.Fatalf("SIGSTOP %d: %v", pid, err)
			}
			t.Skipf("the server's processes cannot be paused: SIGSTOP %d: %v", pid, err)
		}
	}
	return resume
}

// A database that hangs (its processes stopped with SIGSTOP: connections stay open,
// nothing answers) holds no registry call past the registry timeout: a create, a get, a
// list, the sweep and a keepalive each fail within it (plus pgx's grace to drop the
// connection), and everything works again once the database answers.
func TestAHungDatabaseCutsEveryCallAtItsDeadline(t *testing.T) {
	const timeout = 500 * time.Millisecond
	dsn := pgtest.DSN(t)
	st := newStore(t, pgtest.Pool(t, dsn))
	clock := lifecycletest.NewClock(time.Now())
	svc, err := lifecycle.New(lifecycle.Config{
		Store: st, Locker: keylock.New(), Runtime: &lifecycletest.Runtime{}, TTL: time.Hour,
		Clock: clock, RegistryTimeout: timeout,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	chat := uuid.New()
	if _, _, err := svc.Create(ctx, lifecycle.CreateRequest{ChatID: chat}); err != nil {
		t.Fatal(err)
	}

	resume := pause(t, dsn)
	const bound = timeout + 2500*time.Millisecond // pgx gives a cancelled query 1 s more
	for name, call := range map[string]func() error{
		"get":    func() error { _, err := svc.Get(ctx, chat); return err },
		"create": func() error { _, _, err := svc.Create(ctx, lifecycle.CreateRequest{ChatID: uuid.New()}); return err },
		"list":   func() error { _, err := svc.List(ctx, lifecycle.ListFilter{}); return err },
		"keepalive": func() error {
			_, err := svc.Keepalive(ctx, chat, time.Hour)
			return err
		},
		"sweep": func() error {
			clock.Advance(2 * time.Hour)
			_, err := svc.CleanupExpired(ctx)
			return err
		},
	} {
		start := time.Now()
		err := call()
		took := time.Since(start)
		if err == nil {
			t.Errorf("%s on a hung database succeeded", name)
		}
		if took > bound {
			t.Errorf("%s on a hung database took %s, want at most %s", name, took, bound)
		}
		if !errors.Is(err, context.DeadlineExceeded) && !strings.Contains(err.Error(), "timeout") {
			t.Logf("%s: %v", name, err)
		}
	}

	resume()
	waitfor.True(t, 10*time.Second, "the store to answer again", func() bool {
		_, err := svc.Get(ctx, chat)
		return err == nil
	})
}
