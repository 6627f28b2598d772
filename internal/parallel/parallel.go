// Package parallel runs independent CPU work (parsing and rendering a
// thousand key sets at start) on every processor. It is its own package
// because the signer and the JWKS publisher both need it and neither
// should import the other.
package parallel

import (
	"runtime"
	"sync"
	"sync/atomic"
)

// Do runs f(0) ... f(n-1) on as many goroutines as there are processors
// and returns the first error; after an error no new index is started.
func Do(n int, f func(i int) error) error {
	var next atomic.Int64
	var failed atomic.Bool
	errs := make(chan error, 1)
	var wg sync.WaitGroup
	for range min(runtime.GOMAXPROCS(0), n) {
		wg.Go(func() {
			for i := int(next.Add(1)) - 1; i < n && !failed.Load(); i = int(next.Add(1)) - 1 {
				if err := f(i); err != nil {
					failed.Store(true)
					select {
					case errs <- err:
					default:
					}
					return
				}
			}
		})
	}
	wg.Wait()
	select {
	case err := <-errs:
		return err
	default:
		return nil
	}
}
