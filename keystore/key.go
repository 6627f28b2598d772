package keystore

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/x509"
	"fmt"
	"log/slog"
	"slices"
	"time"
)

// State is where a key is in its lifecycle, stored by name.
type State string

// Key states.
const (
	// StatePending keys are published but do not sign yet, so verifiers can
	// cache them before the first token signed with them arrives.
	StatePending State = "pending"
	// StateActive is the one key that signs.
	StateActive State = "active"
	// StateRetired keys no longer sign but stay published (and verify)
	// until every token they signed has expired.
	StateRetired State = "retired"
	// StateRevoked keys are withdrawn at once: never published, never
	// accepted by verify.
	StateRevoked State = "revoked"
)

// Material is private key material: a PKCS #8 DER private key for RSA, EC
// and Ed25519, the raw secret for HMAC. It never prints: fmt, slog and JSON
// all render it as "[redacted]".
type Material []byte

const redacted = "[redacted]"

// String implements fmt.Stringer.
func (Material) String() string { return redacted }

// GoString implements fmt.GoStringer (the %#v verb).
func (Material) GoString() string { return redacted }

// Format implements fmt.Formatter so that %x, %q and friends redact too.
func (Material) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(redacted)) }

// LogValue implements slog.LogValuer.
func (Material) LogValue() slog.Value { return slog.StringValue(redacted) }

// MarshalJSON implements json.Marshaler.
func (Material) MarshalJSON() ([]byte, error) { return []byte(`"` + redacted + `"`), nil }

// MarshalText implements encoding.TextMarshaler (YAML and friends).
func (Material) MarshalText() ([]byte, error) { return []byte(redacted), nil }

// Key is one signing key and its lifecycle timestamps. Zero times mean "not
// yet".
type Key struct {
	ID          string    // kid: RFC 7638 thumbprint, or random for HMAC
	Algorithm   Algorithm // same as the key set's
	State       State
	CreatedAt   time.Time // when it was made and, for public keys, published
	ActivatedAt time.Time // when it started signing
	RetiredAt   time.Time // when it stopped signing
	RevokedAt   time.Time // when it was revoked
	Material    Material
	// Imported keys came from outside keyd (keyd import-key): they keep
	// their kid, and VerifyUntil, when set, is when they stop verifying
	// and are destroyed (instead of their retirement plus the grace).
	Imported    bool
	VerifyUntil time.Time
	// PublicOnly keys have no private half: Material is the public key
	// (PKIX DER). They verify and are published, never sign.
	PublicOnly bool
	// Certificate is the key's X.509 certificate (DER), for key sets with
	// certificates (Policy.Certificates): published in the JWKS as x5c.
	Certificate []byte
	// Custody, when set, names the custody that holds the private half
	// (Custody.Name): Material is then its reference there, and Public
	// the public key (PKIX DER).
	Custody string
	Public  []byte
}

// Published reports whether the key belongs in the JWKS: a public key that
// is pending, active or retired.
func (k Key) Published() bool { return !k.Algorithm.Symmetric() && k.Verifies() }

// Verifies reports whether tokens signed by k are still accepted: any state
// but revoked.
func (k Key) Verifies() bool {
	return k.State == StatePending || k.State == StateActive || k.State == StateRetired
}

// VerificationKey parses what verifies the key's tokens: the public key
// (crypto.PublicKey) for RSA, EC and Ed25519, the secret []byte for HMAC.
func (k Key) VerificationKey() (any, error) {
	if k.InCustody() && k.Algorithm.Symmetric() {
		return nil, fmt.Errorf("%w: key %s: its HMAC secret is held by the %s custody", ErrNoPrivateKey, k.ID, k.Custody)
	}
	if k.InCustody() {
		pub, err := x509.ParsePKIXPublicKey(k.Public)
		if err != nil {
			return nil, fmt.Errorf("%w: key %s: public key does not parse", ErrCorrupt, k.ID)
		}
		if err := fits(k.Algorithm, pub); err != nil {
			return nil, fmt.Errorf("%w: key %s: public key %v", ErrCorrupt, k.ID, err)
		}
		return pub, nil
	}
	if !k.PublicOnly {
		priv, err := k.PrivateKey()
		if signer, ok := priv.(crypto.Signer); ok && err == nil {
			return signer.Public(), nil
		}
		return priv, err
	}
	pub, err := x509.ParsePKIXPublicKey(k.Material)
	if err != nil {
		return nil, fmt.Errorf("%w: key %s: public key does not parse", ErrCorrupt, k.ID)
	}
	if err := fits(k.Algorithm, pub); err != nil {
		return nil, fmt.Errorf("%w: key %s: public key %v", ErrCorrupt, k.ID, err)
	}
	return pub, nil
}

// fits checks that a public key is of the algorithm's family (and curve).
func fits(alg Algorithm, pub crypto.PublicKey) error {
	if keyFamily(pub) != alg.Family() {
		return fmt.Errorf("is not a %s key", alg.Family())
	}
	if ec, ok := pub.(*ecdsa.PublicKey); ok && ec.Curve != alg.Curve() {
		return fmt.Errorf("is an EC key not on the curve of %s", alg)
	}
	return nil
}

// PrivateKey parses the material: a crypto.Signer for RSA, EC and Ed25519,
// the secret []byte for HMAC. Parse once and keep the result; this is not
// meant for every request.
func (k Key) PrivateKey() (any, error) {
	if k.InCustody() {
		return nil, fmt.Errorf("%w: key %s is held by the %s custody", ErrNoPrivateKey, k.ID, k.Custody)
	}
	if k.PublicOnly {
		return nil, fmt.Errorf("%w: key %s is a public key only", ErrNoPrivateKey, k.ID)
	}
	if k.Algorithm.Symmetric() {
		// An imported secret may be shorter (verify-only: keystore.Import
		// never lets it sign).
		if len(k.Material) < k.Algorithm.SecretSize() && !k.Imported {
			return nil, fmt.Errorf("%w: key %s: HMAC secret shorter than %d bytes", ErrCorrupt, k.ID, k.Algorithm.SecretSize())
		}
		return []byte(k.Material), nil
	}
	parsed, err := x509.ParsePKCS8PrivateKey(k.Material)
	if err != nil {
		// The parse error says nothing about the key's content, but keep it
		// out anyway: the message names the key only.
		return nil, fmt.Errorf("%w: key %s: private key does not parse", ErrCorrupt, k.ID)
	}
	signer, ok := parsed.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("%w: key %s: private key is not a %s key", ErrCorrupt, k.ID, k.Algorithm.Family())
	}
	if err := fits(k.Algorithm, signer.Public()); err != nil {
		return nil, fmt.Errorf("%w: key %s: private key %v", ErrCorrupt, k.ID, err)
	}
	return signer, nil
}

// KeySet is a named group of keys sharing one algorithm. Version is the
// store's version of this key set (0: never stored); Put compares it.
type KeySet struct {
	Name        string
	Algorithm   Algorithm
	Keys        []Key     // oldest first
	RotatedAt   time.Time // last rotation, or creation
	Revocations Revocations
	Version     uint64
}

// Clone returns a deep copy that shares nothing with ks.
func (ks *KeySet) Clone() *KeySet {
	c := *ks
	c.Revocations = ks.Revocations.clone()
	c.Keys = make([]Key, len(ks.Keys))
	for i, k := range ks.Keys {
		k.Material = slices.Clone(k.Material)
		k.Public = slices.Clone(k.Public)
		c.Keys[i] = k
	}
	return &c
}

// Key returns the key with the given kid.
func (ks *KeySet) Key(kid string) (Key, bool) {
	for _, k := range ks.Keys {
		if k.ID == kid {
			return k, true
		}
	}
	return Key{}, false
}

// Active returns the signing key.
func (ks *KeySet) Active() (Key, bool) { return ks.first(StateActive) }

// Pending returns the key that signs after the next rotation.
func (ks *KeySet) Pending() (Key, bool) { return ks.first(StatePending) }

func (ks *KeySet) first(s State) (Key, bool) {
	for _, k := range ks.Keys {
		if k.State == s {
			return k, true
		}
	}
	return Key{}, false
}

// Check verifies the invariants every stored key set keeps: a valid name
// and algorithm, unique kids, every key of the set's algorithm with a known
// state and material, exactly one active key and at most one pending key.
// It returns an error wrapping ErrCorrupt.
func (ks *KeySet) Check() error {
	if ks.Name == "" {
		return fmt.Errorf("%w: key set has no name", ErrCorrupt)
	}
	if !ks.Algorithm.Valid() {
		return fmt.Errorf("%w: key set %s: algorithm %q", ErrCorrupt, ks.Name, ks.Algorithm)
	}
	seen := make(map[string]bool, len(ks.Keys))
	count := map[State]int{}
	for _, k := range ks.Keys {
		switch {
		case k.ID == "" || seen[k.ID]:
			return fmt.Errorf("%w: key set %s: missing or duplicate kid %q", ErrCorrupt, ks.Name, k.ID)
		case k.Algorithm != ks.Algorithm:
			return fmt.Errorf("%w: key set %s: key %s has algorithm %s", ErrCorrupt, ks.Name, k.ID, k.Algorithm)
		case len(k.Material) == 0:
			return fmt.Errorf("%w: key set %s: key %s has no material", ErrCorrupt, ks.Name, k.ID)
		case k.InCustody() && len(k.Public) == 0 && !ks.Algorithm.Symmetric():
			return fmt.Errorf("%w: key set %s: key %s of the %s custody has no public key", ErrCorrupt, ks.Name, k.ID, k.Custody)
		case k.PublicOnly && (k.State == StateActive || k.State == StatePending || ks.Algorithm.Symmetric()):
			return fmt.Errorf("%w: key set %s: public-only key %s is %s", ErrCorrupt, ks.Name, k.ID, k.State)
		}
		switch k.State {
		case StatePending, StateActive, StateRetired, StateRevoked:
		default:
			return fmt.Errorf("%w: key set %s: key %s has state %q", ErrCorrupt, ks.Name, k.ID, k.State)
		}
		seen[k.ID] = true
		count[k.State]++
	}
	if count[StateActive] != 1 {
		return fmt.Errorf("%w: key set %s has %d active keys, want 1", ErrCorrupt, ks.Name, count[StateActive])
	}
	if count[StatePending] > 1 {
		return fmt.Errorf("%w: key set %s has %d pending keys, want at most 1", ErrCorrupt, ks.Name, count[StatePending])
	}
	return nil
}
