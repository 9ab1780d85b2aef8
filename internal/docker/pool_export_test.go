package docker

// PoolReady is how many pooled containers r's pool holds ready to be claimed.
func PoolReady(r *Runtime) int {
	p := r.pool
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, pp := range p.set.All {
		n += len(pp.ready)
	}
	return n
}

// AbandonPool stops r's pool as a crash would: its loops end and its lock is released,
// but none of its containers and folders is removed.
func AbandonPool(r *Runtime) {
	p := r.pool
	p.mu.Lock()
	p.drained = true
	cancel, unlock := p.cancel, p.unlock
	p.unlock = nil
	p.mu.Unlock()
	cancel()
	p.loops.Wait()
	unlock(false)
}
