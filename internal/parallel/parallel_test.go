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
