package sqlitestore_test

import (
	"context"
	"database/sql"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/uuid"
	"github.com/pressly/goose/v3"

	"github.com/sandboxd/sandboxd/internal/sandbox"
)

// A registry written before tenants existed keeps its sessions: the migration gives each
// to the default tenant, whose callers reach it as before.
func TestSessionsOfBeforeTenantsBelongToTheDefaultTenant(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "old.db")
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	p, err := goose.NewProvider(goose.DialectSQLite3, db, os.DirFS("migrations"),
		goose.WithDisableGlobalRegistry(true), goose.WithLogger(goose.NopLogger()))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.UpTo(ctx, 2); err != nil {
		t.Fatalf("migrate to the schema before tenants: %v", err)
	}
	chat := uuid.New()
	if _, err := db.ExecContext(ctx, `INSERT INTO sandbox_sessions
		(session_id, chat_id, container_id, status, created_at, expires_at) VALUES (?, ?, 'c1', 'RUNNING', 1, 2)`,
		uuid.NewString(), chat.String()); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	st := open(t, path)
	got, err := st.Get(ctx, chat)
	if err != nil || got.Tenant != sandbox.DefaultTenant {
		t.Fatalf("Get after the migration: tenant %q, %v; want %q", got.Tenant, err, sandbox.DefaultTenant)
	}
	if n, err := st.CountTenant(ctx, sandbox.DefaultTenant); err != nil || n != 1 {
		t.Fatalf("CountTenant(default) = %d, %v; want 1", n, err)
	}
}
