package audit

import (
	"bytes"
	"encoding/base64"
	"fmt"

	"github.com/keyd-dev/keyd/internal/secretfile"
)

// ReadKeyFile reads an audit key: base64 of at least 32 random bytes
// (`head -c 32 /dev/urandom | base64 > audit.key`), in a file nobody but
// its owner may read. Errors name the file, never its content.
func ReadKeyFile(path string) ([]byte, error) {
	raw, err := secretfile.Read(path)
	if err != nil {
		return nil, err
	}
	key, err := base64.StdEncoding.DecodeString(string(bytes.TrimSpace(raw)))
	if err != nil || len(key) < 32 {
		return nil, fmt.Errorf("%s must hold base64 of at least 32 random bytes (head -c 32 /dev/urandom | base64)", path)
	}
	return key, nil
}
