package keystore

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"slices"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwk"
)

// Generator makes fresh key material for an algorithm. rsaBits only matters
// for RSA. Production uses [GenerateMaterial]; tests may swap in a faster
// one (a pool of pre-made RSA keys) so they do not generate keys by the
// hundred.
type Generator func(alg Algorithm, rsaBits int) (Material, error)

// GenerateMaterial makes new key material from crypto/rand.
func GenerateMaterial(alg Algorithm, rsaBits int) (Material, error) {
	var priv any
	var err error
	switch alg.Family() {
	case FamilyHMAC:
		secret := make([]byte, alg.SecretSize())
		_, err = rand.Read(secret)
		return secret, err
	case FamilyRSA:
		if rsaBits == 0 {
			rsaBits = DefaultRSABits
		}
		if !slices.Contains(RSABits, rsaBits) {
			return nil, fmt.Errorf("rsa_bits %d is not allowed (want one of %v)", rsaBits, RSABits)
		}
		priv, err = rsa.GenerateKey(rand.Reader, rsaBits)
	case FamilyEC:
		priv, err = ecdsa.GenerateKey(alg.Curve(), rand.Reader)
	case FamilyEd25519:
		_, priv, err = ed25519.GenerateKey(rand.Reader)
	default:
		return nil, fmt.Errorf("%w: %q", ErrUnsupportedAlgorithm, alg)
	}
	if err != nil {
		return nil, fmt.Errorf("generate %s key: %w", alg, err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, fmt.Errorf("encode %s key: %w", alg, err)
	}
	return der, nil
}

// NewKey makes a pending key from material, created at now. Its kid is the
// RFC 7638 SHA-256 thumbprint of the public key (base64url), or 16 random
// bytes (base64url) for HMAC secrets, which have no public half.
func NewKey(alg Algorithm, m Material, now time.Time) (Key, error) {
	k := Key{Algorithm: alg, State: StatePending, CreatedAt: now.UTC(), Material: m}
	priv, err := k.PrivateKey()
	if err != nil {
		return Key{}, err
	}
	if alg.Symmetric() {
		id := make([]byte, 16)
		if _, err := rand.Read(id); err != nil {
			return Key{}, err
		}
		k.ID = base64.RawURLEncoding.EncodeToString(id)
		return k, nil
	}
	pub, err := jwk.Import(priv.(crypto.Signer).Public())
	if err != nil {
		return Key{}, fmt.Errorf("import %s public key: %w", alg, err)
	}
	if err := jwk.AssignKeyID(pub); err != nil {
		return Key{}, fmt.Errorf("thumbprint %s key: %w", alg, err)
	}
	k.ID, _ = pub.KeyID()
	return k, nil
}

// Generate makes material with gen and wraps it in a new pending key.
func Generate(gen Generator, alg Algorithm, rsaBits int, now time.Time) (Key, error) {
	m, err := gen(alg, rsaBits)
	if err != nil {
		return Key{}, err
	}
	return NewKey(alg, m, now)
}

// keyFamily names the family of a public key, "" if unknown.
func keyFamily(pub crypto.PublicKey) Family {
	switch pub.(type) {
	case *rsa.PublicKey:
		return FamilyRSA
	case *ecdsa.PublicKey:
		return FamilyEC
	case ed25519.PublicKey:
		return FamilyEd25519
	}
	return ""
}
