package keystore

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwk"
)

// Custody holds private keys outside keyd's memory and store (Vault's
// Transit engine, an HSM through PKCS#11): for each such key keyd keeps
// only the custody's reference (Key.Material) and the public key
// (Key.Public), and asks the custody to sign. Software custody, the
// default, is no Custody at all: Key.Custody is empty and Material is the
// PKCS #8 private key. Implementations live in packages of their own
// (custody/transit); custody/custodytest is the suite each passes.
type Custody interface {
	// Name is the custody's type, stored with each of its keys
	// (vault_transit).
	Name() string
	// Create makes a key of alg inside the custody for the key set called
	// keyset, never exportable, and returns its reference and public key.
	Create(ctx context.Context, keyset string, alg Algorithm, rsaBits int) (ref string, pub crypto.PublicKey, err error)
	// Signer returns a crypto.Signer of the key at ref whose public key is
	// pub: its Sign asks the custody (RSA-PSS with the salt as long as the
	// hash; Ed25519 over the whole message). Errors it returns wrap
	// ErrCustodyUnavailable when the custody did not answer.
	Signer(ref string, pub crypto.PublicKey) (crypto.Signer, error)
	// Destroy removes the key at ref; a key already gone is no error.
	Destroy(ctx context.Context, ref string) error
	// Owns reports whether ref has the form this custody gives the keys
	// it makes for the key set called keyset (Transit: key_prefix + key
	// set + "-" + 16 hex digits, nothing more). keyd signs with, lists as
	// the key set's and destroys only such references: a stored key that
	// names anything else (another key set's key, another application's)
	// is refused. A pure check of the form, no I/O.
	Owns(keyset, ref string) bool
}

// IsRef reports whether s is n bytes in lowercase hex, the form of the
// random part of every custody's references (Custody.Owns checks it).
func IsRef(s string, n int) bool {
	if len(s) != 2*n {
		return false
	}
	for _, c := range s {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// CustodyLister is an optional capability of a Custody: the objects it
// holds for a key set, to find orphans (a key made and never stored, when
// keyd died in between or the store did not answer).
type CustodyLister interface {
	Objects(ctx context.Context, keyset string) ([]CustodyObject, error)
}

// CustodyConcurrency is an optional capability of a Custody: how many
// signatures it is best asked for at once when a batch of tokens is
// signed (Transit: a whole batch, which it gathers into few requests).
type CustodyConcurrency interface {
	SignConcurrency() int
}

// DefaultSignConcurrency is how many signatures of a batch a custody
// without CustodyConcurrency is asked for at once: enough to keep an
// HSM's sessions busy without piling callers onto its session pool. With
// SoftHSM on the 2-core machine, 32 concurrent batches of 100
// (keyd-bench --only custody, runs alternated): 4 at once gave 0.91-1.03
// of crypto11's own loop at the loop's CPU per signature; 2 gave 0.90-0.94,
// 16 0.65-0.88, 64 0.82-0.86, with up to 40% more CPU per signature.
const DefaultSignConcurrency = 4

// SignConcurrency is how many signatures of a batch to ask c for at once.
func SignConcurrency(c Custody) int {
	if cc, ok := c.(CustodyConcurrency); ok {
		return max(cc.SignConcurrency(), 1)
	}
	return DefaultSignConcurrency
}

// CustodyObject is a key a custody holds, by reference.
type CustodyObject struct {
	Ref       string
	CreatedAt time.Time
}

// ErrCustodyUnavailable means a key's custody did not answer (Transit
// sealed or unreachable, a token removed): signing answers 503
// custody_unavailable, and rotation is retried later.
var ErrCustodyUnavailable = errors.New("key custody unavailable")

// ErrForeignKey means a stored key does not belong to its key set's
// custody: its private key is in the store while the key set keeps its
// keys in a custody, it names another custody, or its reference is not
// one the custody makes for that key set. Someone who can write the store
// but not the custody put it there (or the key set's custody changed): it
// is never signed with, published or destroyed.
var ErrForeignKey = errors.New("key does not belong to the key set's custody")

// CheckCustody checks every key of ks against c, the key set's custody
// (nil: keyd holds its keys itself): a key with a private half must be
// held by c, under a reference c owns for the key set, and no two keys may
// share a reference. Public-only (imported) keys are not held anywhere
// and pass. It returns an error wrapping ErrForeignKey that names the kid
// and the reason, never the key's material. Revoked keys pass: they
// neither sign, verify nor appear in the JWKS, so revoking a foreign key
// (by its kid, named in the error) is how an operator clears it.
func (ks *KeySet) CheckCustody(c Custody) error {
	refs := make(map[string]string, len(ks.Keys))
	for _, k := range ks.Keys {
		switch {
		case k.PublicOnly || k.State == StateRevoked:
			continue
		case c == nil && k.InCustody():
			return fmt.Errorf("%w: key set %s: key %s is held by the %s custody, which is not configured for the key set", ErrForeignKey, ks.Name, k.ID, k.Custody)
		case c == nil:
			continue
		case !k.InCustody():
			return fmt.Errorf("%w: key set %s keeps its keys in the %s custody, but key %s holds its private key in the store", ErrForeignKey, ks.Name, c.Name(), k.ID)
		case k.Custody != c.Name():
			return fmt.Errorf("%w: key set %s keeps its keys in the %s custody, but key %s names the %s custody", ErrForeignKey, ks.Name, c.Name(), k.ID, k.Custody)
		case !c.Owns(ks.Name, k.Ref()):
			return fmt.Errorf("%w: key set %s: key %s names %q in the %s custody, which is not a key keyd makes for this key set", ErrForeignKey, ks.Name, k.ID, k.Ref(), c.Name())
		case refs[k.Ref()] != "":
			return fmt.Errorf("%w: key set %s: keys %s and %s name the same key %q in the %s custody", ErrForeignKey, ks.Name, refs[k.Ref()], k.ID, k.Ref(), c.Name())
		}
		refs[k.Ref()] = k.ID
	}
	return nil
}

// NewCustodyKey makes a pending key held by the custody called custody at
// ref, with public key pub; its kid is the RFC 7638 thumbprint of pub, as
// for a key keyd holds itself.
func NewCustodyKey(alg Algorithm, custody, ref string, pub crypto.PublicKey, now time.Time) (Key, error) {
	if alg.Symmetric() {
		// An HMAC secret held by the custody: nothing public, a random
		// kid as for keyd's own secrets.
		id := make([]byte, 16)
		_, _ = rand.Read(id)
		return Key{ID: base64.RawURLEncoding.EncodeToString(id), Algorithm: alg, State: StatePending, CreatedAt: now.UTC(), Material: Material(ref), Custody: custody}, nil
	}
	if err := fits(alg, pub); err != nil {
		return Key{}, fmt.Errorf("%w: the %s custody made a key that %v", ErrCorrupt, custody, err)
	}
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return Key{}, err
	}
	j, err := jwk.Import(pub)
	if err != nil {
		return Key{}, fmt.Errorf("import %s public key: %w", alg, err)
	}
	if err := jwk.AssignKeyID(j); err != nil {
		return Key{}, fmt.Errorf("thumbprint %s key: %w", alg, err)
	}
	kid, _ := j.KeyID()
	return Key{ID: kid, Algorithm: alg, State: StatePending, CreatedAt: now.UTC(), Material: Material(ref), Custody: custody, Public: der}, nil
}

// CustodyMACer is the capability of a custody that holds HMAC secrets
// (Transit's hmac keys): Create with an HS* algorithm makes one (its pub is
// nil), and MAC returns what computes its MACs.
type CustodyMACer interface {
	MAC(ref string, alg Algorithm) (MAC, error)
}

// MAC computes, in its custody, the MAC of a signing input with one
// secret. Errors wrap ErrCustodyUnavailable when the custody did not
// answer.
type MAC interface {
	Sum(input []byte) ([]byte, error)
}

// CustodyMAC returns the MAC of an HMAC key held by c.
func (k Key) CustodyMAC(c Custody) (MAC, error) {
	m, ok := c.(CustodyMACer)
	if c == nil || c.Name() != k.Custody || !ok {
		return nil, fmt.Errorf("%w: key %s is held by the %s custody, which is not configured (or holds no HMAC secrets) for its key set", ErrCustodyUnavailable, k.ID, k.Custody)
	}
	return m.MAC(k.Ref(), k.Algorithm)
}

// InCustody reports whether a custody holds the key's private half.
func (k Key) InCustody() bool { return k.Custody != "" }

// Ref is a custody key's reference in its custody.
func (k Key) Ref() string { return string(k.Material) }

// CustodySigner returns the signer of a key held by c.
func (k Key) CustodySigner(c Custody) (crypto.Signer, error) {
	if c == nil || c.Name() != k.Custody {
		return nil, fmt.Errorf("%w: key %s is held by the %s custody, which is not configured for its key set", ErrCustodyUnavailable, k.ID, k.Custody)
	}
	pub, err := k.VerificationKey()
	if err != nil {
		return nil, err
	}
	return c.Signer(k.Ref(), pub)
}

// KeyWrapper encrypts and decrypts a small secret, keyd's master key,
// under a key that never leaves its custody (a Vault Transit key, an AES
// key in a PKCS#11 token): keyd keeps only the wrapped form on disk and
// unwraps it at start. Engines live beside the custodies whose clients
// they use (custody/transit, custody/pkcs11); custody/custodytest's
// RunWrapper is the suite each passes.
type KeyWrapper interface {
	// Wrap encrypts plaintext (AEAD: a changed wrapped form is refused,
	// never unwrapped to something else).
	Wrap(ctx context.Context, plaintext []byte) ([]byte, error)
	// Unwrap decrypts what Wrap gave, under the current or an earlier
	// version of the wrapping key. Errors wrap ErrCustodyUnavailable when
	// the custody did not answer.
	Unwrap(ctx context.Context, wrapped []byte) ([]byte, error)
}
