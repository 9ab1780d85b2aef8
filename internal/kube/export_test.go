package kube

import "time"

// SetSPDYOnly makes r run commands over SPDY only, never WebSocket.
func SetSPDYOnly(r *Runtime, on bool) { r.spdyOnly = on }

// SetPoolLease sets how long r's pool Lease holds without a renewal (before StartPool).
func SetPoolLease(r *Runtime, d time.Duration) { r.pool.lease = d }

// AbandonPool stops r's pool as a crash would: its loops end, its Lease is no longer
// renewed, and nothing it made is removed.
func AbandonPool(r *Runtime) { r.pool.Stop() }

// VolumePending is volumePending, for its test.
var VolumePending = volumePending
