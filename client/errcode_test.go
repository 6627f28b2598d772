package client

import (
	"testing"

	"github.com/keyd-dev/keyd/errcode"
)

// The client has a sentinel for every code of keyd's table, and no other:
// custody_unavailable had none.
func TestSentinelsAreTheTable(t *testing.T) {
	have := map[string]bool{}
	for _, e := range sentinels {
		if _, ok := errcode.Lookup(e.Code); !ok {
			t.Errorf("sentinel %q is not a code of errcode.Table", e.Code)
		}
		have[e.Code] = true
	}
	for _, c := range errcode.Table {
		if !have[c.Name] {
			t.Errorf("code %q has no sentinel in the client", c.Name)
		}
	}
}
