package gctune_test

import (
	"runtime"
	"runtime/debug"
	"testing"

	"github.com/keyd-dev/keyd/internal/gctune"
)

// A small live heap keeps the most headroom (MaxPercent); a live heap of
// twice Headroom gets GOGC 50, so the heap grows by Headroom, not five-fold.
func TestAdjustKeepsHeadroomAbsolute(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	runtime.GC()
	if got := gctune.Adjust(); got != gctune.MaxPercent {
		t.Fatalf("small heap: GOGC %d, want %d", got, gctune.MaxPercent)
	}
	live := make([]byte, 2*gctune.Headroom)
	for i := range live {
		live[i] = 1
	}
	runtime.GC()
	if got := gctune.Adjust(); got < 40 || got > 50 {
		t.Fatalf("a live heap of twice the headroom: GOGC %d, want about 50", got)
	}
	runtime.KeepAlive(live)
}
