package errcode_test

import (
	"testing"

	"google.golang.org/grpc/codes"

	"github.com/keyd-dev/keyd/errcode"
)

// Each code is one row: an error status, and a gRPC code that is not OK;
// the 5xx ones are the faults a caller may retry (Unavailable) or not
// (Internal); a name not in the table is a 500 and Internal.
func TestTable(t *testing.T) {
	seen := map[string]bool{}
	for _, c := range errcode.Table {
		if seen[c.Name] {
			t.Errorf("%s: twice in the table", c.Name)
		}
		seen[c.Name] = true
		if c.HTTP < 400 || c.HTTP > 599 || c.GRPC == codes.OK {
			t.Errorf("%s: HTTP %d, gRPC %v", c.Name, c.HTTP, c.GRPC)
		}
		if c.HTTP == 503 && c.GRPC != codes.Unavailable {
			t.Errorf("%s: a 503 is gRPC Unavailable, not %v", c.Name, c.GRPC)
		}
	}
	if errcode.HTTP("no_such_code") != 500 || errcode.GRPC("no_such_code") != codes.Internal {
		t.Error("an unknown code is not a fault")
	}
}
