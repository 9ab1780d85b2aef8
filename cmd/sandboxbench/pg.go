package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/sandboxd/sandboxd/internal/testing/pgcluster"
)

// startPG starts a throwaway cluster with the newest /usr/lib/postgresql/*/bin (or PG_BIN).
func startPG() (*pgcluster.Cluster, error) {
	bin, err := pgcluster.BinDir()
	if err != nil {
		return nil, fmt.Errorf("%w: pass -pg-dsn or -registries sqlite", err)
	}
	return pgcluster.Start(bin, "sandboxbench-pg-")
}

// newDatabase creates an empty database on the server of admin and returns its DSN and a
// function that drops it.
func newDatabase(ctx context.Context, admin string) (string, func(), error) {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	name := "sandboxbench_" + hex.EncodeToString(b)
	exec := func(ctx context.Context, sql string) error {
		conn, err := pgx.Connect(ctx, admin)
		if err != nil {
			return err
		}
		defer conn.Close(context.Background())
		_, err = conn.Exec(ctx, sql)
		return err
	}
	if err := exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		return "", nil, fmt.Errorf("postgres: create database: %w", err)
	}
	drop := func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)")
	}
	u, err := url.Parse(admin)
	if err != nil {
		drop()
		return "", nil, fmt.Errorf("postgres: DSN must be a URL: %w", err)
	}
	u.Path = "/" + name
	return u.String(), drop, nil
}
