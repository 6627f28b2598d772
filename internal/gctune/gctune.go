// Package gctune keeps the garbage collector's headroom an absolute
// amount of memory rather than a multiple of the live heap. keyd's live
// heap is small until it holds many revocations (about 112 bytes each, a
// million make 110 MiB), while every token allocates: a GOGC of 400 suits
// the small heap (few collections, little CPU) but would let a large one
// grow five-fold. The index of revocations holds no pointers, so a
// collection costs little whatever its size: collecting every Headroom of
// allocation is cheap. It is a package of its own because it is process
// tuning, which neither the daemon's wiring nor main should carry.
package gctune

import (
	"runtime/debug"
	"runtime/metrics"
)

// Headroom is how much the heap may grow past its live part before a
// collection: about ten thousand tokens' worth of allocation.
const Headroom = 96 << 20

// Percents bound the GOGC Adjust sets.
const (
	MinPercent = 25
	MaxPercent = 400
)

// Adjust sets GOGC so that a collection starts after Headroom of
// allocation past the live heap (within MinPercent and MaxPercent), and
// returns the percent set.
func Adjust() int {
	s := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	metrics.Read(s)
	live := int64(s[0].Value.Uint64())
	pct := MaxPercent
	if live > 0 {
		pct = int(min(max(Headroom*100/live, MinPercent), MaxPercent))
	}
	debug.SetGCPercent(pct)
	return pct
}
