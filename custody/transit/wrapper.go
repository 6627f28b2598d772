package transit

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strings"

	vault "github.com/hashicorp/vault/api"

	"github.com/keyd-dev/keyd/keystore"
)

// Wrapper wraps keyd's master key with one Transit key (keystore.KeyWrapper):
// Transit's encrypt and decrypt, so the key that unwraps it never leaves
// Vault. Rotating that Transit key (transit/keys/NAME/rotate) and wrapping
// again (keyd master-key wrap) re-encrypts the master key under the new
// version; earlier versions still unwrap until min_decryption_version
// says otherwise.
type Wrapper struct {
	c     *vault.Client
	mount string
	key   string
}

var _ keystore.KeyWrapper = (*Wrapper)(nil)

// NewWrapper wraps with the Transit key called key of the engine mounted
// at mount (default "transit").
func NewWrapper(c *vault.Client, mount, key string) *Wrapper {
	if mount = strings.Trim(mount, "/"); mount == "" {
		mount = "transit"
	}
	return &Wrapper{c: c, mount: mount, key: key}
}

// Ensure creates the Transit key when it does not exist (aes256-gcm96,
// not exportable, no plaintext backup) and reports whether it did; an
// existing key is left as it is, whatever its type.
func (w *Wrapper) Ensure(ctx context.Context) (created bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, Timeout)
	defer cancel()
	s, err := w.c.Logical().ReadWithContext(ctx, w.mount+"/keys/"+w.key)
	if err != nil {
		return false, w.failed("read key", err)
	}
	if s != nil {
		return false, nil
	}
	params := map[string]any{"type": "aes256-gcm96", "exportable": false, "allow_plaintext_backup": false}
	if _, err := w.c.Logical().WriteWithContext(ctx, w.mount+"/keys/"+w.key, params); err != nil {
		return false, w.failed("create key", err)
	}
	return true, nil
}

// Wrap implements keystore.KeyWrapper: Transit's ciphertext
// (vault:vN:...), as bytes.
func (w *Wrapper) Wrap(ctx context.Context, plaintext []byte) ([]byte, error) {
	s, err := w.call(ctx, "encrypt", map[string]any{"plaintext": base64.StdEncoding.EncodeToString(plaintext)})
	if err != nil {
		return nil, err
	}
	ct, _ := s.Data["ciphertext"].(string)
	if !strings.HasPrefix(ct, "vault:v") {
		return nil, fmt.Errorf("vault transit encrypt with key %s: no ciphertext in the answer", w.key)
	}
	return []byte(ct), nil
}

// Unwrap implements keystore.KeyWrapper.
func (w *Wrapper) Unwrap(ctx context.Context, wrapped []byte) ([]byte, error) {
	if !strings.HasPrefix(string(wrapped), "vault:v") {
		return nil, fmt.Errorf("vault transit decrypt with key %s: not a Transit ciphertext", w.key)
	}
	s, err := w.call(ctx, "decrypt", map[string]any{"ciphertext": string(wrapped)})
	if err != nil {
		return nil, err
	}
	pt, _ := s.Data["plaintext"].(string)
	raw, err := base64.StdEncoding.DecodeString(pt)
	if err != nil {
		return nil, fmt.Errorf("vault transit decrypt with key %s: the plaintext is not base64", w.key)
	}
	return raw, nil
}

func (w *Wrapper) call(ctx context.Context, op string, body map[string]any) (*vault.Secret, error) {
	ctx, cancel := context.WithTimeout(ctx, Timeout)
	defer cancel()
	s, err := w.c.Logical().WriteWithContext(ctx, w.mount+"/"+op+"/"+w.key, body)
	if err != nil {
		return nil, w.failed(op, err)
	}
	if s == nil || s.Data == nil {
		return nil, fmt.Errorf("vault transit %s with key %s: an empty answer", op, w.key)
	}
	return s, nil
}

// failed tells a refusal (Vault answered 4xx: a changed ciphertext, a
// missing key, no permission), said in Vault's words, from Vault not
// answering (keystore.ErrCustodyUnavailable).
func (w *Wrapper) failed(op string, err error) error {
	var re *vault.ResponseError
	if errors.As(err, &re) && re.StatusCode < http.StatusInternalServerError {
		return fmt.Errorf("vault transit %s with key %s/%s refused (HTTP %d): %s", op, w.mount, w.key, re.StatusCode, strings.Join(re.Errors, "; "))
	}
	return unavailable(op+" with key "+w.key, err)
}
