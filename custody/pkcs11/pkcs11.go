//go:build pkcs11

// Package pkcs11 is the PKCS#11 custody (keystore.Custody): a key set's
// keys are generated inside a token (an HSM, SoftHSM in the tests) with
// CKA_TOKEN, CKA_SENSITIVE and CKA_EXTRACTABLE=false, and sign there,
// through github.com/ThalesGroup/crypto11 and its session pool. keyd keeps
// only each key's CKA_ID (hex) and its public key. It needs cgo, so it is
// built only with the pkcs11 build tag; without it, Open says how to get a
// keyd that has it (stub.go).
package pkcs11

import (
	"context"
	"crypto"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/ThalesGroup/crypto11"
	"github.com/miekg/pkcs11"

	"github.com/keyd-dev/keyd/keystore"
)

// Available reports whether this keyd was built with PKCS#11.
const Available = true

// Custody keeps keys in one token.
type Custody struct {
	c *crypto11.Context
}

var _ keystore.Custody = (*Custody)(nil)

// Open loads the module and logs in to the token. Errors say which: the
// module, the token or the PIN; never the PIN itself.
func Open(cfg Config) (keystore.Custody, error) {
	c, err := crypto11.Configure(&crypto11.Config{Path: cfg.Module, TokenLabel: cfg.TokenLabel, Pin: cfg.PIN})
	if err != nil {
		msg := err.Error()
		switch {
		case strings.Contains(msg, "CKR_PIN_INCORRECT") || strings.Contains(msg, "CKR_PIN"):
			return nil, fmt.Errorf("pkcs11: the PIN of token %q is refused", cfg.TokenLabel)
		case strings.Contains(msg, "could not find") && strings.Contains(msg, "token"):
			return nil, fmt.Errorf("pkcs11: no token labelled %q in %s", cfg.TokenLabel, cfg.Module)
		}
		return nil, fmt.Errorf("pkcs11: %s with token %q: %s", cfg.Module, cfg.TokenLabel, strings.ReplaceAll(msg, cfg.PIN, "[pin]"))
	}
	return &Custody{c: c}, nil
}

// Close logs out and unloads the module (keyd's daemon closes it at
// shutdown, as an io.Closer).
func (p *Custody) Close() error { return p.c.Close() }

// Name implements keystore.Custody.
func (*Custody) Name() string { return Name }

func unavailable(op string, err error) error {
	return fmt.Errorf("%w: pkcs11 %s: %v", keystore.ErrCustodyUnavailable, op, err)
}

// Create implements keystore.Custody: a key pair generated in the token,
// labelled keyd-KEYSET-ID, its reference the hex of its CKA_ID.
func (p *Custody) Create(_ context.Context, keyset string, alg keystore.Algorithm, rsaBits int) (string, crypto.PublicKey, error) {
	id := make([]byte, 16)
	_, _ = rand.Read(id)
	ref := hex.EncodeToString(id)
	label := []byte("keyd-" + keyset + "-" + ref)
	var k crypto11.Signer
	var err error
	switch alg.Family() {
	case keystore.FamilyEC:
		curve := map[keystore.Algorithm]elliptic.Curve{keystore.ES256: elliptic.P256(), keystore.ES384: elliptic.P384(), keystore.ES512: elliptic.P521()}[alg]
		k, err = p.c.GenerateECDSAKeyPairWithLabel(id, label, curve)
	case keystore.FamilyRSA:
		if rsaBits == 0 {
			rsaBits = keystore.DefaultRSABits
		}
		k, err = p.c.GenerateRSAKeyPairWithLabel(id, label, rsaBits)
	case keystore.FamilyHMAC:
		// A generic secret (CKM_GENERIC_SECRET_KEY_GEN), which the
		// CKM_SHA*_HMAC mechanisms take on every token.
		if _, err := p.c.GenerateSecretKeyWithLabel(id, label, alg.SecretSize()*8, crypto11.CipherGeneric); err != nil {
			return "", nil, unavailable("generate secret", err)
		}
		return ref, nil, nil // a secret: nothing public
	default:
		return "", nil, fmt.Errorf("%w: the PKCS#11 custody holds no %s keys (crypto11 has no EdDSA)", keystore.ErrUnsupportedAlgorithm, alg)
	}
	if err != nil {
		return "", nil, unavailable("generate key", err)
	}
	return ref, k.Public(), nil
}

func (p *Custody) find(ref string) (crypto11.Signer, error) {
	return lookup(ref, "key", p.c.FindKeyPair)
}

// lookup finds the token's object at ref with find (by CKA_ID): the zero
// value when the token holds none.
func lookup[K any](ref, what string, find func(id, label []byte) (K, error)) (K, error) {
	var none K
	id, err := hex.DecodeString(ref)
	if err != nil {
		return none, fmt.Errorf("%w: pkcs11 reference %q is not hex", keystore.ErrCorrupt, ref)
	}
	k, err := find(id, nil)
	if err != nil && strings.Contains(err.Error(), "not found") {
		return none, nil
	}
	if err != nil {
		return none, unavailable("find "+what, err)
	}
	return k, nil
}

// Owns implements keystore.Custody: keyd's references in a token are the
// 32 lowercase hex digits of a CKA_ID it chose (the label, keyd-KEYSET-ID,
// binds the object to its key set; Objects reads it).
func (*Custody) Owns(_, ref string) bool {
	if len(ref) != 32 {
		return false
	}
	for _, c := range ref {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// Signer implements keystore.Custody: of the token's key pairs with the
// reference's CKA_ID, the one whose public key is pub, the one keyd
// stored. Another object planted with the same CKA_ID is never used,
// whatever order the token lists them in.
func (p *Custody) Signer(ref string, pub crypto.PublicKey) (crypto.Signer, error) {
	id, err := hex.DecodeString(ref)
	if err != nil {
		return nil, fmt.Errorf("%w: pkcs11 reference %q is not hex", keystore.ErrCorrupt, ref)
	}
	pairs, err := p.c.FindKeyPairs(id, nil)
	if err != nil && !strings.Contains(err.Error(), "not found") {
		return nil, unavailable("find key", err)
	}
	eq, ok := pub.(interface{ Equal(crypto.PublicKey) bool })
	for _, k := range pairs {
		if ok && eq.Equal(k.Public()) {
			return signer{k: k, pub: pub}, nil
		}
	}
	if len(pairs) > 0 {
		return nil, fmt.Errorf("%w: %w: pkcs11: no key %s in the token holds the public key stored for it", keystore.ErrCustodyUnavailable, keystore.ErrForeignKey, ref)
	}
	return nil, fmt.Errorf("%w: pkcs11: no key %s in the token", keystore.ErrCustodyUnavailable, ref)
}

// signer wraps the token's key so that its failures read as the custody's.
type signer struct {
	k   crypto11.Signer
	pub crypto.PublicKey
}

func (s signer) Public() crypto.PublicKey { return s.pub }

func (s signer) Sign(r io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	sig, err := s.k.Sign(r, digest, opts)
	if err != nil {
		return nil, unavailable("sign", err)
	}
	return sig, nil
}

// Destroy implements keystore.Custody: the key pair (or HMAC secret) is
// deleted from the token; a key already gone is no error.
func (p *Custody) Destroy(_ context.Context, ref string) error {
	k, err := p.find(ref)
	if err != nil {
		return err
	}
	if k != nil {
		if err := k.Delete(); err != nil {
			return unavailable("delete key", err)
		}
		return nil
	}
	secret, err := p.findSecret(ref)
	if err != nil || secret == nil {
		return err
	}
	if err := secret.Delete(); err != nil {
		return unavailable("delete secret", err)
	}
	return nil
}

// findSecret finds the HMAC secret at ref; nil when there is none.
func (p *Custody) findSecret(ref string) (*crypto11.SecretKey, error) {
	return lookup(ref, "secret", p.c.FindKey)
}

// MAC implements keystore.CustodyMACer: the token computes the HMAC
// (CKM_SHA256_HMAC and kin); the secret never leaves it.
func (p *Custody) MAC(ref string, alg keystore.Algorithm) (keystore.MAC, error) {
	mech, ok := map[keystore.Algorithm]int{keystore.HS256: pkcs11.CKM_SHA256_HMAC, keystore.HS384: pkcs11.CKM_SHA384_HMAC, keystore.HS512: pkcs11.CKM_SHA512_HMAC}[alg]
	if !ok {
		return nil, fmt.Errorf("%w: %s is not an HMAC algorithm", keystore.ErrUnsupportedAlgorithm, alg)
	}
	k, err := p.findSecret(ref)
	if err != nil {
		return nil, err
	}
	if k == nil {
		return nil, fmt.Errorf("%w: pkcs11: no secret %s in the token", keystore.ErrCustodyUnavailable, ref)
	}
	return mac{k: k, mech: mech}, nil
}

type mac struct {
	k    *crypto11.SecretKey
	mech int
}

func (m mac) Sum(input []byte) ([]byte, error) {
	h, err := m.k.NewHMAC(m.mech, 0)
	if err != nil {
		return nil, unavailable("hmac", err)
	}
	if _, err := h.Write(input); err != nil {
		return nil, unavailable("hmac", err)
	}
	sum := h.Sum(nil)
	if len(sum) == 0 {
		return nil, unavailable("hmac", errors.New("the token computed no MAC"))
	}
	return sum, nil
}

// Objects implements keystore.CustodyLister: the token's key pairs and
// secrets labelled exactly keyd-KEYSET-REF. A token keeps no creation time: orphans are
// reported at start, never deleted.
func (p *Custody) Objects(_ context.Context, keyset string) ([]keystore.CustodyObject, error) {
	pairs, err := p.c.FindAllKeyPairs()
	if err != nil {
		return nil, unavailable("list keys", err)
	}
	secrets, err := p.c.FindAllKeys()
	if err != nil {
		return nil, unavailable("list secrets", err)
	}
	keys := make([]any, 0, len(pairs)+len(secrets))
	for _, k := range pairs {
		keys = append(keys, k)
	}
	for _, k := range secrets {
		keys = append(keys, k)
	}
	var out []keystore.CustodyObject
	for _, k := range keys {
		a, err := p.c.GetAttributes(k, []crypto11.AttributeType{crypto11.CkaId, crypto11.CkaLabel})
		if err != nil {
			return nil, unavailable("read key attributes", err)
		}
		label, id := a[crypto11.CkaLabel], a[crypto11.CkaId]
		if label == nil || id == nil {
			continue
		}
		// Exactly keyd's label for the key set and this id: key set a's
		// objects are never key set a-b's (keyd-a-b-...).
		ref := hex.EncodeToString(id.Value)
		if string(label.Value) != "keyd-"+keyset+"-"+ref || !p.Owns(keyset, ref) {
			continue
		}
		out = append(out, keystore.CustodyObject{Ref: ref})
	}
	return out, nil
}
