package records_test

import (
	"path/filepath"
	"testing"

	"github.com/keyd-dev/keyd/backends/file"
	"github.com/keyd-dev/keyd/tokenstate"
	"github.com/keyd-dev/keyd/tokenstate/records"
	"github.com/keyd-dev/keyd/tokenstate/tokenstatetest"
)

// The engine over a real bbolt file; backends/vault runs it over OpenBao.
func TestOnBbolt(t *testing.T) {
	tokenstatetest.Run(t, func(t *testing.T) tokenstate.Store {
		s, err := file.Open(file.Options{Path: filepath.Join(t.TempDir(), "keyd.db"), MasterKey: make([]byte, 32)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		return records.New(s)
	})
}
