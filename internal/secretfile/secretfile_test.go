package secretfile_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/keyd-dev/keyd/internal/secretfile"
)

// Owner-only files pass; others' access never does; group read passes only
// for a root-owned file of one of the process's groups (a Kubernetes Secret
// mounted with an fsGroup: root:fsGroup 0440), never group write.
func TestRule(t *testing.T) {
	dir := t.TempDir()
	asRoot := os.Getuid() == 0 && os.Getgid() == 0 // the file is root:root, the process's own group
	for _, c := range []struct {
		mode os.FileMode
		ok   bool
	}{
		{0o600, true}, {0o400, true}, {0o644, false}, {0o604, false}, {0o660, false}, {0o640, asRoot}, {0o440, asRoot},
	} {
		path := filepath.Join(dir, "f")
		_ = os.Remove(path)
		if err := os.WriteFile(path, []byte("s3cret"), c.mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(path, c.mode); err != nil {
			t.Fatal(err)
		}
		_, err := secretfile.Read(path)
		if (err == nil) != c.ok {
			t.Errorf("mode %04o: %v, want ok %v", c.mode, err, c.ok)
		}
		if err != nil && (strings.Contains(err.Error(), "s3cret") || !strings.Contains(err.Error(), "chmod 600")) {
			t.Errorf("mode %04o: %v", c.mode, err)
		}
	}
}
