package pkcs11

import (
	"context"
	"errors"

	"github.com/keyd-dev/keyd/keystore"
)

// Name is the custody's type in the config and on each stored key.
const Name = "pkcs11"

// Config opens a token.
type Config struct {
	Module     string // the PKCS#11 library, e.g. /usr/lib/softhsm/libsofthsm2.so
	TokenLabel string
	PIN        string
}

// ErrNotBuilt says how to get a keyd with PKCS#11.
var ErrNotBuilt = errors.New("this keyd was built without PKCS#11 custody: build it with CGO_ENABLED=1 go build -tags pkcs11 ./cmd/keyd; the default binary stays static and pure Go")

// KeyWrapper is what OpenWrapper gives: a keystore.KeyWrapper over an AES
// key in a token, which Ensure makes when missing.
type KeyWrapper interface {
	keystore.KeyWrapper
	Ensure(ctx context.Context) (created bool, err error)
	Close() error
}
