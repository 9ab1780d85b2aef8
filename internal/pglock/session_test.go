package pglock_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/internal/pglock"
	"github.com/sandboxd/sandboxd/internal/sandbox"
	"github.com/sandboxd/sandboxd/internal/testing/pgtest"
)

// Connected directly, session advisory locks hold; behind a real PgBouncer in transaction
// pooling, where they silently stop excluding, the check refuses with a message that
// names the proxy and the way on.
func TestCheckSessionLocksRefusesATransactionPoolingProxy(t *testing.T) {
	ctx := context.Background()
	dsn := pgtest.DSN(t)
	if err := pglock.CheckSessionLocks(ctx, pgtest.Pool(t, dsn)); err != nil {
		t.Fatalf("CheckSessionLocks, connected directly: %v", err)
	}
	for _, mode := range []string{"transaction", "statement"} {
		t.Run(mode, func(t *testing.T) {
			pool := pgtest.Pool(t, pgbouncer(t, dsn, mode))
			err := pglock.CheckSessionLocks(ctx, pool)
			if !errors.Is(err, sandbox.ErrInvalid) || !strings.Contains(err.Error(), "PgBouncer") || !strings.Contains(err.Error(), "session pooling") {
				t.Fatalf("CheckSessionLocks behind PgBouncer in %s pooling = %v, want ErrInvalid naming the proxy and the way on", mode, err)
			}
		})
	}
	t.Run("session", func(t *testing.T) {
		if err := pglock.CheckSessionLocks(ctx, pgtest.Pool(t, pgbouncer(t, dsn, "session"))); err != nil {
			t.Fatalf("CheckSessionLocks behind PgBouncer in session pooling: %v", err)
		}
	})
}

// pgbouncer starts a PgBouncer in front of the database of dsn in the given pool mode
// and returns the DSN through it. Without pgbouncer the test skips, or fails with CI=true
// (.ci/run installs it).
func pgbouncer(t *testing.T, dsn, mode string) string {
	t.Helper()
	bin, err := exec.LookPath("pgbouncer")
	if err != nil {
		if bin, err = exec.LookPath("/usr/sbin/pgbouncer"); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatal("pgbouncer is not installed, and CI=true (apt-get install pgbouncer)")
			}
			t.Skip("pgbouncer is not installed")
		}
	}
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	_ = l.Close()
	dir, err := os.MkdirTemp("", "pgbouncer-") // not t.TempDir: its parent is root's alone
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	ini := fmt.Sprintf(`[databases]
* = host=%s port=%s user=%s
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = %d
unix_socket_dir =
auth_type = any
pool_mode = %s
default_pool_size = 4
max_client_conn = 100
ignore_startup_parameters = extra_float_digits
logfile = %s
`, u.Hostname(), u.Port(), u.User.Username(), port, mode, filepath.Join(dir, "pgbouncer.log"))
	if err := os.WriteFile(filepath.Join(dir, "pgbouncer.ini"), []byte(ini), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, filepath.Join(dir, "pgbouncer.ini"))
	if os.Geteuid() == 0 { // pgbouncer refuses to run as root
		pg, err := user.Lookup("postgres")
		if err != nil {
			t.Fatalf("pgbouncer as root needs the postgres user: %v", err)
		}
		uid, _ := strconv.Atoi(pg.Uid)
		gid, _ := strconv.Atoi(pg.Gid)
		if err := os.Chown(dir, uid, gid); err != nil {
			t.Fatal(err)
		}
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
	}
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	through := *u
	through.Host = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("tcp", through.Host)
		if err == nil {
			_ = c.Close()
			break
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(dir, "pgbouncer.log"))
			t.Fatalf("pgbouncer did not listen: %v\n%s\n%s", err, out.String(), log)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return through.String()
}
