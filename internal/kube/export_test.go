package kube

// SetSPDYOnly makes r run commands over SPDY only, never WebSocket.
func SetSPDYOnly(r *Runtime, on bool) { r.spdyOnly = on }
