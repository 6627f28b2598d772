package signer

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"errors"
	"fmt"
	"hash"
	"sync"

	"golang.org/x/crypto/cryptobyte"
	"golang.org/x/crypto/cryptobyte/asn1"

	"github.com/keyd-dev/keyd/keystore"
)

// method makes the JWS signature of a signing input (the encoded header, a
// dot and the encoded payload) with one key. It is chosen once per keyring,
// so a token pays for no algorithm dispatch and no key conversion; the
// standard library's crypto does the work.
type method func(input []byte) ([]byte, error)

// macMethod is an HMAC method as the MAC a verification checks a token's
// signature with (tokencheck.MAC).
type macMethod method

func (m macMethod) Sum(input []byte) ([]byte, error) { return m(input) }

// newMethod returns the signing method of alg with key, a parsed private
// key as keystore.Key.PrivateKey returns it.
func newMethod(alg keystore.Algorithm, key any) (method, error) {
	h := hashOf(alg)
	if m, ok := key.(keystore.MAC); ok && alg.Family() == keystore.FamilyHMAC { // a secret in custody
		return m.Sum, nil
	}
	switch k := key.(type) {
	case []byte:
		if alg.Family() != keystore.FamilyHMAC {
			break
		}
		// hmac.New computes the padded key blocks; pooled hashers do that
		// once per keyring and processor rather than once per token.
		pool := &sync.Pool{New: func() any { return hmac.New(h.New, k) }}
		return func(input []byte) ([]byte, error) {
			m := pool.Get().(hash.Hash)
			m.Reset()
			m.Write(input)
			sig := m.Sum(make([]byte, 0, h.Size()))
			pool.Put(m)
			return sig, nil
		}, nil
	case *ecdsa.PrivateKey:
		if alg.Family() != keystore.FamilyEC || k.Curve != alg.Curve() {
			break
		}
		size := (k.Curve.Params().BitSize + 7) / 8
		return func(input []byte) ([]byte, error) {
			der, err := ecdsa.SignASN1(rand.Reader, k, digest(h, input))
			if err != nil {
				return nil, err
			}
			return fixedSize(der, size)
		}, nil
	case ed25519.PrivateKey:
		if alg != keystore.EdDSA {
			break
		}
		return func(input []byte) ([]byte, error) { return ed25519.Sign(k, input), nil }, nil
	case *rsa.PrivateKey:
		switch alg {
		case keystore.RS256, keystore.RS384, keystore.RS512:
			return func(input []byte) ([]byte, error) {
				return rsa.SignPKCS1v15(nil, k, h, digest(h, input))
			}, nil
		case keystore.PS256, keystore.PS384, keystore.PS512:
			// RFC 7518 section 3.5: the salt is as long as the hash.
			opts := &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: h}
			return func(input []byte) ([]byte, error) {
				return rsa.SignPSS(rand.Reader, k, h, digest(h, input), opts)
			}, nil
		}
	}
	if k, ok := key.(crypto.Signer); ok { // a key in custody: Sign asks it
		return custodyMethod(alg, k, h)
	}
	return nil, fmt.Errorf("%w: a %T key cannot sign %s", keystore.ErrCorrupt, key, alg)
}

// custodyMethod signs through a crypto.Signer of a key held elsewhere, as
// the standard library's keys are used above: a digest (the whole input
// for Ed25519), PSS with the salt as long as the hash, ECDSA turned into
// R||S.
func custodyMethod(alg keystore.Algorithm, k crypto.Signer, h crypto.Hash) (method, error) {
	switch pub := k.Public().(type) {
	case *ecdsa.PublicKey:
		if alg.Family() != keystore.FamilyEC || pub.Curve != alg.Curve() {
			break
		}
		size := (pub.Curve.Params().BitSize + 7) / 8
		return func(input []byte) ([]byte, error) {
			der, err := k.Sign(rand.Reader, digest(h, input), h)
			if err != nil {
				return nil, err
			}
			return fixedSize(der, size)
		}, nil
	case ed25519.PublicKey:
		if alg != keystore.EdDSA {
			break
		}
		return func(input []byte) ([]byte, error) { return k.Sign(rand.Reader, input, crypto.Hash(0)) }, nil
	case *rsa.PublicKey:
		switch alg {
		case keystore.RS256, keystore.RS384, keystore.RS512:
			return func(input []byte) ([]byte, error) { return k.Sign(rand.Reader, digest(h, input), h) }, nil
		case keystore.PS256, keystore.PS384, keystore.PS512:
			opts := &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: h}
			return func(input []byte) ([]byte, error) { return k.Sign(rand.Reader, digest(h, input), opts) }, nil
		}
	}
	return nil, fmt.Errorf("%w: a %T key in custody cannot sign %s", keystore.ErrCorrupt, k.Public(), alg)
}

// signatureSize is the length of key's JWS signatures, to size token
// buffers (computed, not measured: an RSA-4096 signature costs
// milliseconds).
func signatureSize(key any) int {
	switch k := key.(type) {
	case *ecdsa.PrivateKey:
		return 2 * ((k.Curve.Params().BitSize + 7) / 8)
	case *rsa.PrivateKey:
		return k.Size()
	case ed25519.PrivateKey:
		return ed25519.SignatureSize
	case crypto.Signer: // in custody
		switch pub := k.Public().(type) {
		case *ecdsa.PublicKey:
			return 2 * ((pub.Curve.Params().BitSize + 7) / 8)
		case *rsa.PublicKey:
			return pub.Size()
		case ed25519.PublicKey:
			return ed25519.SignatureSize
		}
	}
	return sha512.Size // HMAC: at most SHA-512's
}

// hashOf is the hash of alg's name: SHA-256 for the *256 algorithms and so
// on; EdDSA hashes internally (SHA-512, unused here).
func hashOf(alg keystore.Algorithm) crypto.Hash {
	switch alg {
	case keystore.HS384, keystore.RS384, keystore.PS384, keystore.ES384:
		return crypto.SHA384
	case keystore.HS512, keystore.RS512, keystore.PS512, keystore.ES512, keystore.EdDSA:
		return crypto.SHA512
	}
	return crypto.SHA256
}

// digest hashes input with h without allocating a hasher.
func digest(h crypto.Hash, input []byte) []byte {
	switch h {
	case crypto.SHA384:
		d := sha512.Sum384(input)
		return d[:]
	case crypto.SHA512:
		d := sha512.Sum512(input)
		return d[:]
	}
	d := sha256.Sum256(input)
	return d[:]
}

var errECDSASignature = errors.New("ECDSA signature is not a DER SEQUENCE of two INTEGERs")

// fixedSize turns an ASN.1 DER ECDSA signature into the JWS form RFC 7518
// section 3.4 requires: R and S as big-endian integers of the curve's byte
// size each, concatenated.
func fixedSize(der []byte, size int) ([]byte, error) {
	var seq, r, s cryptobyte.String
	in := cryptobyte.String(der)
	if !in.ReadASN1(&seq, asn1.SEQUENCE) || !in.Empty() ||
		!seq.ReadASN1(&r, asn1.INTEGER) || !seq.ReadASN1(&s, asn1.INTEGER) || !seq.Empty() {
		return nil, errECDSASignature
	}
	out := make([]byte, 2*size)
	if !putInt(out[:size], r) || !putInt(out[size:], s) {
		return nil, errECDSASignature
	}
	return out, nil
}

// putInt writes the non-negative DER INTEGER content v right-aligned in dst.
func putInt(dst []byte, v []byte) bool {
	for len(v) > 0 && v[0] == 0 {
		v = v[1:]
	}
	if len(v) > len(dst) {
		return false
	}
	copy(dst[len(dst)-len(v):], v)
	return true
}
