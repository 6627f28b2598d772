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
	"sync/atomic"

	"github.com/ThalesGroup/crypto11"
	"github.com/miekg/pkcs11"

	"github.com/keyd-dev/keyd/keystore"
)

// Available reports whether this keyd was built with PKCS#11.
const Available = true

// idBytes is the length of the CKA_ID keyd gives each key it makes.
const idBytes = 16

// Custody keeps keys in one token.
type Custody struct {
	conn
}

var _ keystore.Custody = (*Custody)(nil)

// Open loads the module and logs in to the token. Errors say which: the
// module, the token or the PIN; never the PIN itself.
func Open(cfg Config) (keystore.Custody, error) {
	c, err := configure(cfg)
	if err != nil {
		return nil, err
	}
	return &Custody{conn{cfg: cfg, c: c}}, nil
}

// Close logs out and unloads the module (keyd's daemon closes it at
// shutdown, as an io.Closer).
func (p *Custody) Close() error { return p.close() }

// Name implements keystore.Custody.
func (*Custody) Name() string { return Name }

func unavailable(op string, err error) error {
	return fmt.Errorf("%w: pkcs11 %s: %v", keystore.ErrCustodyUnavailable, op, err)
}

// Create implements keystore.Custody: a key pair generated in the token,
// labelled keyd-KEYSET-ID, its reference the hex of its CKA_ID.
func (p *Custody) Create(_ context.Context, keyset string, alg keystore.Algorithm, rsaBits int) (string, crypto.PublicKey, error) {
	c, gen, err := p.get()
	if err != nil {
		return "", nil, err
	}
	ref, pub, err := create(c, keyset, alg, rsaBits)
	if err != nil {
		p.failed(gen, err)
	}
	return ref, pub, err
}

func create(c *crypto11.Context, keyset string, alg keystore.Algorithm, rsaBits int) (string, crypto.PublicKey, error) {
	id := make([]byte, idBytes)
	_, _ = rand.Read(id)
	ref := hex.EncodeToString(id)
	label := []byte("keyd-" + keyset + "-" + ref)
	var k crypto11.Signer
	var err error
	switch alg.Family() {
	case keystore.FamilyEC:
		curve := map[keystore.Algorithm]elliptic.Curve{keystore.ES256: elliptic.P256(), keystore.ES384: elliptic.P384(), keystore.ES512: elliptic.P521()}[alg]
		k, err = c.GenerateECDSAKeyPairWithLabel(id, label, curve)
	case keystore.FamilyRSA:
		if rsaBits == 0 {
			rsaBits = keystore.DefaultRSABits
		}
		k, err = c.GenerateRSAKeyPairWithLabel(id, label, rsaBits)
	case keystore.FamilyHMAC:
		// A generic secret (CKM_GENERIC_SECRET_KEY_GEN), which the
		// CKM_SHA*_HMAC mechanisms take on every token.
		if _, err := c.GenerateSecretKeyWithLabel(id, label, alg.SecretSize()*8, crypto11.CipherGeneric); err != nil {
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

func find(c *crypto11.Context, ref string) (crypto11.Signer, error) {
	return lookup(ref, "key", c.FindKeyPair)
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
func (*Custody) Owns(_, ref string) bool { return keystore.IsRef(ref, idBytes) }

// Signer implements keystore.Custody: of the token's key pairs with the
// reference's CKA_ID, the one whose public key is pub, the one keyd
// stored. Another object planted with the same CKA_ID is never used,
// whatever order the token lists them in. The key is found again in the
// new sessions after the token was reopened.
func (p *Custody) Signer(ref string, pub crypto.PublicKey) (crypto.Signer, error) {
	s := &signer{p: p, ref: ref, pub: pub}
	if _, _, err := s.key(); err != nil {
		return nil, err
	}
	return s, nil
}

// signer signs with the token's key at ref, and reads its failures as the
// custody's.
type signer struct {
	p   *Custody
	ref string
	pub crypto.PublicKey
	cur atomic.Pointer[bound]
}

// bound is a key found in the sessions of one generation of the context.
type bound struct {
	gen uint64
	k   crypto11.Signer
}

// key returns the key in the current context, finding it again after a
// reopening.
func (s *signer) key() (crypto11.Signer, uint64, error) {
	c, gen, err := s.p.get()
	if err != nil {
		return nil, gen, err
	}
	if b := s.cur.Load(); b != nil && b.gen == gen {
		return b.k, gen, nil
	}
	k, err := findPair(c, s.ref, s.pub)
	if err != nil {
		s.p.failed(gen, err)
		return nil, gen, err
	}
	s.cur.Store(&bound{gen: gen, k: k})
	return k, gen, nil
}

// findPair is the key pair at ref whose public key is pub.
func findPair(c *crypto11.Context, ref string, pub crypto.PublicKey) (crypto11.Signer, error) {
	id, err := hex.DecodeString(ref)
	if err != nil {
		return nil, fmt.Errorf("%w: pkcs11 reference %q is not hex", keystore.ErrCorrupt, ref)
	}
	pairs, err := c.FindKeyPairs(id, nil)
	if err != nil && !strings.Contains(err.Error(), "not found") {
		return nil, unavailable("find key", err)
	}
	eq, ok := pub.(interface{ Equal(crypto.PublicKey) bool })
	for _, k := range pairs {
		if ok && eq.Equal(k.Public()) {
			return k, nil
		}
	}
	if len(pairs) > 0 {
		return nil, fmt.Errorf("%w: %w: pkcs11: no key %s in the token holds the public key stored for it", keystore.ErrCustodyUnavailable, keystore.ErrForeignKey, ref)
	}
	return nil, fmt.Errorf("%w: pkcs11: no key %s in the token", keystore.ErrCustodyUnavailable, ref)
}

func (s *signer) Public() crypto.PublicKey { return s.pub }

func (s *signer) Sign(r io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	k, gen, err := s.key()
	if err != nil {
		return nil, err
	}
	sig, err := k.Sign(r, digest, opts)
	if err != nil {
		s.p.failed(gen, err)
		return nil, unavailable("sign", err)
	}
	return sig, nil
}

// Destroy implements keystore.Custody: the key pair (or HMAC secret) is
// deleted from the token; a key already gone is no error.
func (p *Custody) Destroy(_ context.Context, ref string) error {
	c, gen, err := p.get()
	if err != nil {
		return err
	}
	err = destroy(c, ref)
	p.failed(gen, err)
	return err
}

func destroy(c *crypto11.Context, ref string) error {
	k, err := find(c, ref)
	if err != nil {
		return err
	}
	if k != nil {
		if err := k.Delete(); err != nil {
			return unavailable("delete key", err)
		}
		return nil
	}
	secret, err := findSecret(c, ref)
	if err != nil || secret == nil {
		return err
	}
	if err := secret.Delete(); err != nil {
		return unavailable("delete secret", err)
	}
	return nil
}

// findSecret finds the HMAC secret at ref; nil when there is none.
func findSecret(c *crypto11.Context, ref string) (*crypto11.SecretKey, error) {
	return lookup(ref, "secret", c.FindKey)
}

// MAC implements keystore.CustodyMACer: the token computes the HMAC
// (CKM_SHA256_HMAC and kin); the secret never leaves it.
func (p *Custody) MAC(ref string, alg keystore.Algorithm) (keystore.MAC, error) {
	mech, ok := map[keystore.Algorithm]int{keystore.HS256: pkcs11.CKM_SHA256_HMAC, keystore.HS384: pkcs11.CKM_SHA384_HMAC, keystore.HS512: pkcs11.CKM_SHA512_HMAC}[alg]
	if !ok {
		return nil, fmt.Errorf("%w: %s is not an HMAC algorithm", keystore.ErrUnsupportedAlgorithm, alg)
	}
	m := &mac{p: p, ref: ref, mech: mech}
	if _, _, err := m.key(); err != nil {
		return nil, err
	}
	return m, nil
}

type mac struct {
	p    *Custody
	ref  string
	mech int
	cur  atomic.Pointer[boundSecret]
}

type boundSecret struct {
	gen uint64
	k   *crypto11.SecretKey
}

// key returns the secret in the current context, found again after a
// reopening.
func (m *mac) key() (*crypto11.SecretKey, uint64, error) {
	c, gen, err := m.p.get()
	if err != nil {
		return nil, gen, err
	}
	if b := m.cur.Load(); b != nil && b.gen == gen {
		return b.k, gen, nil
	}
	k, err := findSecret(c, m.ref)
	if err == nil && k == nil {
		err = fmt.Errorf("%w: pkcs11: no secret %s in the token", keystore.ErrCustodyUnavailable, m.ref)
	}
	if err != nil {
		m.p.failed(gen, err)
		return nil, gen, err
	}
	m.cur.Store(&boundSecret{gen: gen, k: k})
	return k, gen, nil
}

func (m *mac) Sum(input []byte) ([]byte, error) {
	k, gen, err := m.key()
	if err != nil {
		return nil, err
	}
	sum, err := sum(k, m.mech, input)
	if err != nil {
		m.p.failed(gen, err)
		return nil, unavailable("hmac", err)
	}
	return sum, nil
}

func sum(k *crypto11.SecretKey, mech int, input []byte) ([]byte, error) {
	h, err := k.NewHMAC(mech, 0)
	if err != nil {
		return nil, err
	}
	if _, err := h.Write(input); err != nil {
		return nil, err
	}
	out := h.Sum(nil)
	if len(out) == 0 {
		return nil, errors.New("the token computed no MAC")
	}
	return out, nil
}

// Objects implements keystore.CustodyLister: the token's key pairs and
// secrets labelled exactly keyd-KEYSET-REF. A token keeps no creation time: orphans are
// reported at start, never deleted.
func (p *Custody) Objects(_ context.Context, keyset string) ([]keystore.CustodyObject, error) {
	c, gen, err := p.get()
	if err != nil {
		return nil, err
	}
	objs, err := p.objects(c, keyset)
	p.failed(gen, err)
	return objs, err
}

func (p *Custody) objects(c *crypto11.Context, keyset string) ([]keystore.CustodyObject, error) {
	pairs, err := c.FindAllKeyPairs()
	if err != nil {
		return nil, unavailable("list keys", err)
	}
	secrets, err := c.FindAllKeys()
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
		a, err := c.GetAttributes(k, []crypto11.AttributeType{crypto11.CkaId, crypto11.CkaLabel})
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
