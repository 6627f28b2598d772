//go:build race

package api_test

// The race detector makes sync.Pool drop items at random, so allocation
// counts mean nothing under it; scripts/test.sh runs those tests without it.
const raceEnabled = true
