// Package wait holds the one wait keyd's background loops share: a sleep
// that ends early when its context does. A package of its own because the
// store, token pair and backup loops each had a copy.
package wait

import (
	"context"
	"time"
)

// Sleep waits d, or until ctx ends; it reports whether d passed.
func Sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
