//go:build pkcs11

package pkcs11

import (
	"context"
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"fmt"

	"github.com/ThalesGroup/crypto11"
)

// wrapFormat is the first byte of a wrapped form: AES-256-GCM in the
// token, then the nonce, then the ciphertext and its tag.
const wrapFormat = 1

// wrapAD binds a wrapped form to its use: it unwraps as a master key only.
var wrapAD = []byte("keyd wrapped master key v1")

// Wrapper wraps keyd's master key with an AES-256 key that lives in the
// token (CKM_AES_GCM there; the key is sensitive and not extractable).
type Wrapper struct {
	conn
	label string
}

// OpenWrapper logs in to the token of cfg to wrap with its AES key
// labelled label.
func OpenWrapper(cfg Config, label string) (KeyWrapper, error) {
	c, err := configure(cfg)
	if err != nil {
		return nil, err
	}
	return &Wrapper{conn: conn{cfg: cfg, c: c}, label: label}, nil
}

// Close logs out and unloads the module.
func (w *Wrapper) Close() error { return w.close() }

// key finds the one AES key labelled w.label.
func (w *Wrapper) key() (*crypto11.SecretKey, error) {
	c, gen, err := w.get()
	if err != nil {
		return nil, err
	}
	keys, err := c.FindKeys(nil, []byte(w.label))
	if err != nil {
		w.failed(gen, err)
		return nil, unavailable("find key "+w.label, err)
	}
	switch len(keys) {
	case 0:
		return nil, fmt.Errorf("pkcs11: no secret key labelled %q in token %q (keyd master-key new makes one)", w.label, w.cfg.TokenLabel)
	case 1:
		return keys[0], nil
	}
	return nil, fmt.Errorf("pkcs11: %d secret keys labelled %q in token %q: keyd wraps with exactly one", len(keys), w.label, w.cfg.TokenLabel)
}

// Ensure makes the AES-256 key when the token has none of that label,
// and reports whether it did.
func (w *Wrapper) Ensure(context.Context) (bool, error) {
	c, _, err := w.get()
	if err != nil {
		return false, err
	}
	keys, err := c.FindKeys(nil, []byte(w.label))
	if err != nil || len(keys) > 0 {
		return false, err
	}
	id := make([]byte, idBytes)
	_, _ = rand.Read(id)
	if _, err := c.GenerateSecretKeyWithLabel(id, []byte(w.label), 256, crypto11.CipherAES); err != nil {
		return false, fmt.Errorf("pkcs11: make the AES key %q: %w", w.label, err)
	}
	return true, nil
}

// gcm is AES-GCM with the wrapping key, in the token.
func (w *Wrapper) gcm() (cipher.AEAD, error) {
	k, err := w.key()
	if err != nil {
		return nil, err
	}
	aead, err := k.NewGCM()
	if err != nil {
		return nil, fmt.Errorf("pkcs11: key %q: %w", w.label, err)
	}
	return aead, nil
}

// Wrap implements keystore.KeyWrapper.
func (w *Wrapper) Wrap(_ context.Context, plaintext []byte) (wrapped []byte, err error) {
	aead, err := w.gcm()
	if err != nil {
		return nil, err
	}
	nonce := make([]byte, aead.NonceSize())
	_, _ = rand.Read(nonce)
	defer func() { // crypto11's Seal panics on a token error
		if r := recover(); r != nil {
			wrapped, err = nil, unavailable("encrypt with "+w.label, fmt.Errorf("%v", r))
		}
	}()
	out := append([]byte{wrapFormat}, nonce...)
	return aead.Seal(out, nonce, plaintext, wrapAD), nil
}

// Unwrap implements keystore.KeyWrapper.
func (w *Wrapper) Unwrap(_ context.Context, wrapped []byte) ([]byte, error) {
	aead, err := w.gcm()
	if err != nil {
		return nil, err
	}
	n := aead.NonceSize()
	if len(wrapped) < 1+n+aead.Overhead() || wrapped[0] != wrapFormat {
		return nil, errors.New("pkcs11: not a master key wrapped by keyd")
	}
	pt, err := aead.Open(nil, wrapped[1:1+n], wrapped[1+n:], wrapAD)
	if err != nil {
		return nil, fmt.Errorf("pkcs11: the wrapped master key does not decrypt with key %q (changed, or wrapped by another key): %v", w.label, err)
	}
	return pt, nil
}
