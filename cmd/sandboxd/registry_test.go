package main

import "testing"

// The lock pool has room for a full sweep and other chats besides: a sweep of slow stops
// must not hold every connection the locks of other chats need. A size the dsn sets wins.
func TestLockPoolLeavesRoomBesidesTheSweep(t *testing.T) {
	const parallelism = 4
	cfg, err := lockPoolConfig("postgres://sandboxd@127.0.0.1:5432/sandboxd", parallelism)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := cfg.MaxConns, int32(parallelism+lockPoolHeadroom); got < want {
		t.Errorf("lock pool of %d connections, want at least %d (sweep %d + %d others)", got, want, parallelism, lockPoolHeadroom)
	}
	cfg, err = lockPoolConfig("postgres://sandboxd@127.0.0.1:5432/sandboxd?pool_max_conns=7", parallelism)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.MaxConns != 7 {
		t.Errorf("lock pool of %d connections, the dsn says 7", cfg.MaxConns)
	}
}
