package gather_test

import (
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/keyd-dev/keyd/internal/gather"
)

// Concurrent callers each get the answer to their own request, never more
// than MaxInFlight calls of Send run at once, none larger than MaxBatch,
// and under load far fewer calls are made than requests; a lone request
// is a call of its own, and errors reach their own caller only.
func TestBatcher(t *testing.T) {
	var calls, running, most, taken atomic.Int64
	release := make(chan struct{})
	b := &gather.Batcher[int, string]{MaxInFlight: 2, MaxBatch: 50, Send: func(ins []int) ([]string, []error) {
		calls.Add(1)
		taken.Add(int64(len(ins)))
		n := running.Add(1)
		for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
		}
		defer running.Add(-1)
		<-release
		if len(ins) > 50 {
			t.Errorf("a call of %d requests", len(ins))
		}
		outs, errs := make([]string, len(ins)), make([]error, len(ins))
		for i, in := range ins {
			if in%7 == 0 {
				errs[i] = fmt.Errorf("no %d", in)
				continue
			}
			outs[i] = fmt.Sprint("answer ", in)
		}
		return outs, errs
	}}
	close(release) // a lone request: sent at once
	if out, err := b.Do(1); out != "answer 1" || err != nil || calls.Load() != 1 {
		t.Fatalf("a lone request: %q %v, %d calls", out, err, calls.Load())
	}
	release = make(chan struct{})
	const n = 1000
	var wg sync.WaitGroup
	outs, errs := make([]string, n), make([]error, n)
	for i := range n {
		wg.Go(func() { outs[i], errs[i] = b.Do(i) })
	}
	// Both calls out and held, and every other request queued behind them
	// (released before the last goroutines ran, those would each find a
	// call slot free and go alone).
	for running.Load() < 2 || taken.Load()+int64(b.Queued()) < n+1 {
		runtime.Gosched()
	}
	close(release)
	wg.Wait()
	for i := range n {
		if i%7 == 0 {
			if errs[i] == nil || errs[i].Error() != fmt.Sprint("no ", i) {
				t.Fatalf("request %d: %q %v", i, outs[i], errs[i])
			}
			continue
		}
		if errs[i] != nil || outs[i] != fmt.Sprint("answer ", i) {
			t.Fatalf("request %d: %q %v", i, outs[i], errs[i])
		}
	}
	if most.Load() > 2 {
		t.Fatalf("%d calls at once; at most 2", most.Load())
	}
	if c := calls.Load() - 1; c > n/10 {
		t.Fatalf("%d requests in %d calls", n, c)
	}
	t.Logf("%d requests in %d calls", n, calls.Load()-1)
}

// A Send that panics (a bug) answers every request of its round trip with
// an error instead of leaving them waiting, and the next requests still
// go out.
func TestSendPanics(t *testing.T) {
	var calls atomic.Int64
	b := &gather.Batcher[int, int]{MaxInFlight: 1, MaxBatch: 10, Send: func(ins []int) ([]int, []error) {
		if calls.Add(1) == 1 {
			panic("a bug")
		}
		return ins, make([]error, len(ins))
	}}
	if _, err := b.Do(1); err == nil {
		t.Fatal("a panicking round trip answered no error")
	}
	if out, err := b.Do(2); out != 2 || err != nil {
		t.Fatalf("the next request: %d %v", out, err)
	}
}
