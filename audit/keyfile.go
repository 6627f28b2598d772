package audit

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"os"
)

// ReadKeyFile reads an audit key: base64 of at least 32 random bytes
// (`head -c 32 /dev/urandom | base64 > audit.key`), in a file nobody but
// its owner may read. Errors name the file, never its content.
func ReadKeyFile(path string) ([]byte, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("%s has mode %04o, readable by others; run chmod 600 %s", path, perm, path)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	key, err := base64.StdEncoding.DecodeString(string(bytes.TrimSpace(raw)))
	if err != nil || len(key) < 32 {
		return nil, fmt.Errorf("%s must hold base64 of at least 32 random bytes (head -c 32 /dev/urandom | base64)", path)
	}
	return key, nil
}
