package file

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"

	"github.com/keyd-dev/keyd/keystore"
)

// wrappedFormat names the format of a wrapped master key file.
const wrappedFormat = "keyd-wrapped-master-key/1"

// Wrapped is a master key file whose key is wrapped by a custody: one JSON
// object. Nothing in it is secret without the wrapping key; KeyID names
// the master key inside, so that a file and a database can be matched
// without unwrapping.
type Wrapped struct {
	Format    string `json:"format"`
	WrappedBy string `json:"wrapped_by"` // vault_transit or pkcs11
	Key       string `json:"key"`        // the wrapping key's name
	KeyID     string `json:"key_id"`     // the master key's (KeyID)
	Wrapped   []byte `json:"wrapped"`    // what the custody gave, base64
}

// IsWrapped reports whether the content of a master key file is a wrapped
// key rather than the base64 of a key.
func IsWrapped(data []byte) bool { return bytes.HasPrefix(bytes.TrimSpace(data), []byte("{")) }

// WrapMasterKey wraps key with w, the wrapper called by with its key
// named keyName, and returns the file's content.
func WrapMasterKey(ctx context.Context, w keystore.KeyWrapper, by, keyName string, key []byte) ([]byte, error) {
	if len(key) != MasterKeySize {
		return nil, ErrBadMasterKey
	}
	wrapped, err := w.Wrap(ctx, key)
	if err != nil {
		return nil, err
	}
	out, err := json.MarshalIndent(Wrapped{Format: wrappedFormat, WrappedBy: by, Key: keyName, KeyID: KeyID(key), Wrapped: wrapped}, "", "  ")
	return append(out, '\n'), err
}

// ParseWrapped reads a wrapped master key file's content.
func ParseWrapped(data []byte) (*Wrapped, error) {
	var wk Wrapped
	if err := json.Unmarshal(data, &wk); err != nil {
		return nil, fmt.Errorf("not a wrapped master key: %v", err)
	}
	if wk.Format != wrappedFormat {
		return nil, fmt.Errorf("not a wrapped master key of this keyd (format %q, want %q)", wk.Format, wrappedFormat)
	}
	if wk.WrappedBy == "" || wk.Key == "" || len(wk.Wrapped) == 0 {
		return nil, fmt.Errorf("a wrapped master key without wrapped_by, key or wrapped")
	}
	return &wk, nil
}

// Unwrap asks w for the master key, and checks it is the one the file
// names.
func (wk *Wrapped) Unwrap(ctx context.Context, w keystore.KeyWrapper) ([]byte, error) {
	key, err := w.Unwrap(ctx, wk.Wrapped)
	if err != nil {
		return nil, err
	}
	if len(key) != MasterKeySize || KeyID(key) != wk.KeyID {
		return nil, fmt.Errorf("the wrapped master key unwrapped to another key than the one of id %s the file names", wk.KeyID)
	}
	return key, nil
}
