// Package parallel runs independent work on several goroutines: CPU work
// (parsing and rendering a thousand key sets at start) on every
// processor, and round trips (signatures asked of a custody, entries
// moved in Redis) on as many goroutines as the remote side takes. It is
// its own package because the signer, the JWKS publisher and the token
// state engines all need it and none should import another.
package parallel

import (
	"runtime"
	"sync"
	"sync/atomic"
)

// Each runs f(0) ... f(n-1), each index once, on at most workers
// goroutines (at least one), and returns when every call has returned;
// f keeps its own results.
func Each(n, workers int, f func(i int)) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(max(workers, 1), n) {
		wg.Go(func() {
			for i := int(next.Add(1)) - 1; i < n; i = int(next.Add(1)) - 1 {
				f(i)
			}
		})
	}
	wg.Wait()
}

// Do runs f(0) ... f(n-1) on as many goroutines as there are processors
// and returns the first error; after an error no new index is started.
func Do(n int, f func(i int) error) error {
	var first atomic.Pointer[error]
	Each(n, runtime.GOMAXPROCS(0), func(i int) {
		if first.Load() != nil {
			return
		}
		if err := f(i); err != nil {
			first.CompareAndSwap(nil, &err)
		}
	})
	if p := first.Load(); p != nil {
		return *p
	}
	return nil
}
