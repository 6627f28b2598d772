// Package keyimport turns keys that exist outside keyd into keystore keys
// for keystore.Import: a PEM (PKCS #1, PKCS #8 or SEC 1 private key, PKIX
// public key), a JWK, another issuer's JWKS (public keys), or an HMAC
// secret. It is its own package because parsing foreign formats, and
// refusing what does not fit a key set's algorithm with a message that
// says why, is a job of its own that the API and the CLI only call.
//
// It parses with the standard library (crypto/x509, encoding/pem) and jwx;
// no error or warning ever holds key material, only kinds, sizes and kids.
package keyimport

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"strings"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwk"

	"github.com/keyd-dev/keyd/keystore"
)

// Input is what to import: exactly one of PEM, JWK, JWKS or Secret.
type Input struct {
	PEM    []byte
	JWK    []byte
	JWKS   []byte
	Secret []byte // an HMAC secret, as the bytes the old signer used
	// KID overrides the kid (a single key only): tokens in flight carry it.
	// Without it a JWK's own kid is kept, and a key without one gets
	// keyd's usual kid (the RFC 7638 thumbprint; random for HMAC).
	KID string
	// VerifyUntil, when set, is when the keys stop verifying.
	VerifyUntil time.Time
}

// Parse turns in into keys of alg, pending-state placeholders that
// keystore.Import places. Warnings are for the answer and the log (a short
// HMAC secret, allowed verify-only). Errors wrap keystore.ErrInvalidImport.
func Parse(alg keystore.Algorithm, in Input, now time.Time) (keys []keystore.Key, warnings []string, err error) {
	given := 0
	for _, b := range [][]byte{in.PEM, in.JWK, in.JWKS, in.Secret} {
		if len(b) > 0 {
			given++
		}
	}
	if given != 1 {
		return nil, nil, invalid("give exactly one of pem, jwk, jwks or secret")
	}
	switch {
	case len(in.Secret) > 0:
		k, w, err := secret(alg, in.Secret)
		if err != nil {
			return nil, nil, err
		}
		keys, warnings = []keystore.Key{k}, w
	case len(in.PEM) > 0:
		raw, err := ParsePEM(in.PEM)
		if err != nil {
			return nil, nil, err
		}
		k, err := asymmetric(alg, raw, "")
		if err != nil {
			return nil, nil, err
		}
		keys = []keystore.Key{k}
	case len(in.JWK) > 0:
		key, err := jwk.ParseKey(in.JWK)
		if err != nil {
			return nil, nil, invalid("jwk does not parse as a JWK")
		}
		k, w, err := fromJWK(alg, key)
		if err != nil {
			return nil, nil, err
		}
		keys, warnings = []keystore.Key{k}, w
	default:
		set, err := jwk.Parse(in.JWKS)
		if err != nil {
			return nil, nil, invalid("jwks does not parse as a JWK set")
		}
		if set.Len() == 0 {
			return nil, nil, invalid("the JWKS holds no key")
		}
		if in.KID != "" {
			return nil, nil, invalid("kid cannot be given for a JWKS: each key keeps its own")
		}
		for i := range set.Len() {
			key, _ := set.Key(i)
			if isPrivate(key) {
				return nil, nil, invalid("the JWKS holds a private key (key %d): a JWKS import takes another issuer's public keys; import a private key alone with jwk or pem", i)
			}
			k, _, err := fromJWK(alg, key)
			if err != nil {
				return nil, nil, err
			}
			keys = append(keys, k)
		}
	}
	if in.KID != "" {
		if len(keys) != 1 {
			return nil, nil, invalid("kid names a single key")
		}
		keys[0].ID = in.KID
	}
	for i := range keys {
		if err := checkKID(keys[i].ID); err != nil {
			return nil, nil, err
		}
		keys[i].CreatedAt = now.UTC()
		if !in.VerifyUntil.IsZero() {
			keys[i].VerifyUntil = in.VerifyUntil.UTC()
		}
	}
	return keys, warnings, nil
}

// MaxKID bounds an imported kid.
const MaxKID = 128

func checkKID(kid string) error {
	if kid == "" || len(kid) > MaxKID {
		return invalid("kid must be 1 to %d characters", MaxKID)
	}
	for _, c := range kid {
		if c < 0x21 || c > 0x7e {
			return invalid("kid must be printable ASCII without spaces")
		}
	}
	return nil
}

func invalid(format string, a ...any) error {
	return fmt.Errorf("%w: %s", keystore.ErrInvalidImport, fmt.Sprintf(format, a...))
}

// ParsePEM returns the one key a PEM holds: a private key (crypto.Signer)
// or a public key. Errors wrap keystore.ErrInvalidImport and say what is
// wrong (encrypted, several keys or none, not a key) without the content.
func ParsePEM(data []byte) (any, error) {
	var found []*pem.Block
	rest := data
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if strings.Contains(b.Type, "ENCRYPTED") || b.Headers["Proc-Type"] != "" {
			return nil, invalid("the PEM is encrypted: decrypt it first (openssl pkey -in F -out G) and use G")
		}
		if strings.HasSuffix(b.Type, "KEY") {
			found = append(found, b)
		}
	}
	switch {
	case len(found) == 0 && len(bytes.TrimSpace(rest)) > 0 && !bytes.Contains(data, []byte("-----BEGIN")):
		return nil, invalid("pem is not PEM (it must start with a BEGIN line)")
	case len(found) == 0:
		return nil, invalid("the PEM holds no key (want PRIVATE KEY, RSA PRIVATE KEY, EC PRIVATE KEY or PUBLIC KEY)")
	case len(found) > 1:
		return nil, invalid("the PEM holds %d keys: import one at a time", len(found))
	}
	b := found[0]
	switch b.Type {
	case "PRIVATE KEY":
		k, err := x509.ParsePKCS8PrivateKey(b.Bytes)
		if err != nil {
			return nil, invalid("the PKCS #8 private key does not parse")
		}
		return k, nil
	case "RSA PRIVATE KEY":
		k, err := x509.ParsePKCS1PrivateKey(b.Bytes)
		if err != nil {
			return nil, invalid("the PKCS #1 RSA private key does not parse")
		}
		return k, nil
	case "EC PRIVATE KEY":
		k, err := x509.ParseECPrivateKey(b.Bytes)
		if err != nil {
			return nil, invalid("the SEC 1 EC private key does not parse")
		}
		return k, nil
	case "PUBLIC KEY":
		k, err := x509.ParsePKIXPublicKey(b.Bytes)
		if err != nil {
			return nil, invalid("the PKIX public key does not parse")
		}
		return k, nil
	case "RSA PUBLIC KEY":
		k, err := x509.ParsePKCS1PublicKey(b.Bytes)
		if err != nil {
			return nil, invalid("the PKCS #1 RSA public key does not parse")
		}
		return k, nil
	}
	return nil, invalid("PEM block %q is not a key keyd imports", b.Type)
}

// asymmetric makes a key of alg from a parsed private or public key.
func asymmetric(alg keystore.Algorithm, raw any, kid string) (keystore.Key, error) {
	if alg.Symmetric() {
		return keystore.Key{}, invalid("%s signs with an HMAC secret, not %s: import it with secret", alg, describe(raw))
	}
	var pub crypto.PublicKey
	signer, private := raw.(crypto.Signer)
	if private {
		pub = signer.Public()
	} else {
		pub = raw
	}
	if err := fits(alg, pub); err != nil {
		return keystore.Key{}, err
	}
	k := keystore.Key{ID: kid, Algorithm: alg, State: keystore.StatePending}
	var err error
	if private {
		k.Material, err = x509.MarshalPKCS8PrivateKey(raw)
	} else {
		k.PublicOnly = true
		k.Material, err = x509.MarshalPKIXPublicKey(pub)
	}
	if err != nil {
		return keystore.Key{}, invalid("the key (%s) cannot be encoded", describe(raw))
	}
	if k.ID == "" {
		j, err := jwk.Import(pub)
		if err == nil {
			err = jwk.AssignKeyID(j)
		}
		if err != nil {
			return keystore.Key{}, invalid("the key (%s) has no thumbprint", describe(raw))
		}
		k.ID, _ = j.KeyID()
	}
	return k, nil
}

// fits refuses a public key of the wrong family, curve or size.
func fits(alg keystore.Algorithm, pub crypto.PublicKey) error {
	want := alg.Family()
	switch p := pub.(type) {
	case *rsa.PublicKey:
		if want != keystore.FamilyRSA {
			break
		}
		if p.N.BitLen() < 2048 {
			return invalid("the RSA key has %d bits; keyd takes 2048 or more", p.N.BitLen())
		}
		return nil
	case *ecdsa.PublicKey:
		if want != keystore.FamilyEC {
			break
		}
		if p.Curve != alg.Curve() {
			return invalid("the EC key is on %s; %s needs %s", p.Curve.Params().Name, alg, alg.Curve().Params().Name)
		}
		return nil
	case ed25519.PublicKey:
		if want == keystore.FamilyEd25519 {
			return nil
		}
	}
	return invalid("the key set signs %s: it needs %s, not %s", alg, needs(alg), describe(pub))
}

func needs(alg keystore.Algorithm) string {
	switch alg.Family() {
	case keystore.FamilyRSA:
		return "an RSA key of 2048 bits or more"
	case keystore.FamilyEC:
		return "an EC key on " + alg.Curve().Params().Name
	case keystore.FamilyEd25519:
		return "an Ed25519 key"
	}
	return "an HMAC secret"
}

func describe(k any) string {
	switch k.(type) {
	case *rsa.PrivateKey:
		return "an RSA private key"
	case *rsa.PublicKey:
		return "an RSA public key"
	case *ecdsa.PrivateKey:
		return "an EC private key"
	case *ecdsa.PublicKey:
		return "an EC public key"
	case ed25519.PrivateKey:
		return "an Ed25519 private key"
	case ed25519.PublicKey:
		return "an Ed25519 public key"
	case []byte:
		return "an HMAC secret"
	}
	return fmt.Sprintf("a %T", k)
}

// fromJWK makes a key of a parsed JWK, keeping its kid.
func fromJWK(alg keystore.Algorithm, key jwk.Key) (keystore.Key, []string, error) {
	kid, _ := key.KeyID()
	if a, ok := key.Algorithm(); ok && a.String() != "" && a.String() != string(alg) {
		return keystore.Key{}, nil, invalid("key %q is for %s, the key set signs %s", kid, a.String(), alg)
	}
	if key.KeyType().String() == "oct" {
		var secretBytes []byte
		if err := jwk.Export(key, &secretBytes); err != nil {
			return keystore.Key{}, nil, invalid("the oct JWK %q has no secret", kid)
		}
		k, w, err := secret(alg, secretBytes)
		if err != nil {
			return keystore.Key{}, nil, err
		}
		if kid != "" {
			k.ID = kid
		}
		return k, w, nil
	}
	var raw any
	if err := jwk.Export(key, &raw); err != nil {
		return keystore.Key{}, nil, invalid("the JWK %q does not give a key", kid)
	}
	k, err := asymmetric(alg, raw, kid)
	return k, nil, err
}

// isPrivate reports whether a JWK holds a secret or a private key.
func isPrivate(key jwk.Key) bool {
	if key.KeyType().String() == "oct" {
		return true
	}
	var raw any
	if err := jwk.Export(key, &raw); err != nil {
		return false
	}
	_, private := raw.(crypto.Signer)
	return private
}

// secret makes an HMAC key. A secret shorter than the hash (RFC 7518,
// 3.2) is allowed for verification only, with a warning; keystore.Import
// refuses it for a signing state.
func secret(alg keystore.Algorithm, s []byte) (keystore.Key, []string, error) {
	if !alg.Symmetric() {
		return keystore.Key{}, nil, invalid("the key set signs %s: it needs %s, not an HMAC secret", alg, needs(alg))
	}
	if len(s) == 0 {
		return keystore.Key{}, nil, invalid("the secret is empty")
	}
	id := make([]byte, 16)
	_, _ = rand.Read(id) // crypto/rand.Read never fails (Go 1.24+)
	// A random kid: a thumbprint of a secret would let anyone who sees the
	// kid test guesses of a weak secret offline.
	k := keystore.Key{ID: base64.RawURLEncoding.EncodeToString(id), Algorithm: alg, State: keystore.StatePending, Material: bytes.Clone(s)}
	var warnings []string
	if len(s) < alg.SecretSize() {
		warnings = append(warnings, fmt.Sprintf("the secret has %d bytes, less than the %d RFC 7518 requires for %s: it may only verify (state retired), and should be retired soon", len(s), alg.SecretSize(), alg))
	}
	return k, warnings, nil
}
