package parallel_test

import (
	"errors"
	"sync/atomic"
	"testing"

	"github.com/keyd-dev/keyd/internal/parallel"
)

func TestDoRunsEachIndexOnce(t *testing.T) {
	seen := make([]atomic.Int32, 1000)
	if err := parallel.Do(len(seen), func(i int) error { seen[i].Add(1); return nil }); err != nil {
		t.Fatal(err)
	}
	for i := range seen {
		if n := seen[i].Load(); n != 1 {
			t.Fatalf("index %d ran %d times", i, n)
		}
	}
	if err := parallel.Do(0, func(int) error { t.Fatal("ran with n=0"); return nil }); err != nil {
		t.Fatal(err)
	}
}

func TestDoReturnsAnError(t *testing.T) {
	boom := errors.New("boom")
	var ran atomic.Int32
	err := parallel.Do(10000, func(i int) error {
		ran.Add(1)
		if i == 3 {
			return boom
		}
		return nil
	})
	if !errors.Is(err, boom) {
		t.Fatalf("Do = %v", err)
	}
	if ran.Load() == 10000 {
		t.Error("Do went on after the error")
	}
}

// Each runs every index once, never on more goroutines than asked (one
// when asked for none), and returns only when every call has returned.
func TestEachBoundsItsGoroutines(t *testing.T) {
	for _, workers := range []int{0, 1, 3, 64} {
		seen := make([]atomic.Int32, 500)
		var running, most, done atomic.Int32
		parallel.Each(len(seen), workers, func(i int) {
			n := running.Add(1)
			for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
			}
			seen[i].Add(1)
			running.Add(-1)
			done.Add(1)
		})
		if done.Load() != int32(len(seen)) {
			t.Fatalf("workers %d: Each returned after %d of %d calls", workers, done.Load(), len(seen))
		}
		for i := range seen {
			if n := seen[i].Load(); n != 1 {
				t.Fatalf("workers %d: index %d ran %d times", workers, i, n)
			}
		}
		if limit := int32(max(workers, 1)); most.Load() > limit {
			t.Fatalf("workers %d: %d calls at once", workers, most.Load())
		}
	}
}
