package gateway

import (
	"context"
	"sync"
	"time"
)

// CacheUsage asks the engine at addr how many bytes its build cache holds
// (engine.Client.Status: BuildKit's DiskUsage, on the engine's side).
type CacheUsage func(ctx context.Context, addr string) (int64, error)

// cacheAskTimeout bounds the admin /status's questions to engines: a
// person waits for the answer, and an engine that cannot say within it is
// shown without its cache.
const cacheAskTimeout = 5 * time.Second

// runningAddr is where the engine serves while it is running; "" otherwise.
func (e *Engine) runningAddr() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.state != Running {
		return ""
	}
	return e.addr
}

// addCacheUsage fills in the cache usage of each running engine of sts (the
// pool's engines, in order), asking them all at once. A stopped engine is
// not woken to ask; one that cannot answer gets CacheError instead.
func (p *Pool) addCacheUsage(ctx context.Context, sts []EngineStatus, ask CacheUsage) {
	ctx, cancel := context.WithTimeout(ctx, cacheAskTimeout)
	defer cancel()
	var wg sync.WaitGroup
	for i, e := range p.engines {
		addr := e.runningAddr()
		if addr == "" || i >= len(sts) {
			continue
		}
		wg.Go(func() {
			n, err := ask(ctx, addr)
			if err != nil {
				sts[i].CacheError = err.Error()
				return
			}
			sts[i].CacheBytes = n
		})
	}
	wg.Wait()
}
