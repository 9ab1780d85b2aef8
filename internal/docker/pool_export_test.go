package docker

// PoolReady is how many pooled containers r's pool holds ready to be claimed.
func PoolReady(r *Runtime) int {
	n := 0
	for _, f := range r.pool.Fill() {
		n += f.Ready
	}
	return n
}

// AbandonPool stops r's pool as a crash would: its loops end and its lock is released,
// but none of its containers and folders is removed.
func AbandonPool(r *Runtime) {
	p := r.pool
	p.mu.Lock()
	unlock := p.unlock
	p.unlock = nil
	p.mu.Unlock()
	p.Stop()
	unlock(false)
}
