package pgcluster_test

import (
	"context"
	"errors"
	"os"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/sandboxd/sandboxd/internal/testing/pgcluster"
)

func TestStartServesAndStopRemovesEverything(t *testing.T) {
	bin, err := pgcluster.BinDir()
	if errors.Is(err, pgcluster.ErrNoBinaries) && os.Getenv("CI") != "true" {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	c, err := pgcluster.Start(bin, "pgcluster-test-")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, c.DSN())
	if err != nil {
		_ = c.Stop()
		t.Fatal(err)
	}
	var one int
	err = conn.QueryRow(ctx, "SELECT 1").Scan(&one)
	_ = conn.Close(ctx)
	if err != nil || one != 1 {
		_ = c.Stop()
		t.Fatalf("SELECT 1 = %d, %v", one, err)
	}
	if err := c.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if _, err := pgx.Connect(ctx, c.DSN()); err == nil {
		t.Fatal("the cluster still answers after Stop")
	}
}
