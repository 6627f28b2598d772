// Package secretfile reads the files that hold secrets keyd is given (an
// audit key, a CA's private key, an HSM PIN, the master key): each must be
// readable by its owner alone, and no error ever shows its content. It is
// a package of its own so that every such file gets the same rule and the
// same words.
package secretfile

import (
	"fmt"
	"os"
)

// Check fails when path cannot be read, or is readable by group or others,
// saying how to fix it.
func Check(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return fmt.Errorf("%s has mode %04o, readable by others; run chmod 600 %s", path, perm, path)
	}
	return nil
}

// Read is Check, then the file's content.
func Read(path string) ([]byte, error) {
	if err := Check(path); err != nil {
		return nil, err
	}
	return os.ReadFile(path)
}
