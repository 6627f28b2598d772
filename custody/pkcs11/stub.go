//go:build !pkcs11

package pkcs11

import "github.com/keyd-dev/keyd/keystore"

// Available reports whether this keyd was built with PKCS#11: not this
// one (it is static and pure Go).
const Available = false

// Open fails: see ErrNotBuilt.
func Open(Config) (keystore.Custody, error) { return nil, ErrNotBuilt }

// OpenWrapper fails: see ErrNotBuilt.
func OpenWrapper(Config, string) (KeyWrapper, error) { return nil, ErrNotBuilt }
