package keystore

import (
	"crypto/elliptic"
	"fmt"
	"strings"
)

// Algorithm is a JWS signature algorithm, stored and configured by its JOSE
// name ("ES256"), never by number.
type Algorithm string

// The algorithms keyd signs with. "none" and anything else is refused.
const (
	HS256 Algorithm = "HS256"
	HS384 Algorithm = "HS384"
	HS512 Algorithm = "HS512"
	RS256 Algorithm = "RS256"
	RS384 Algorithm = "RS384"
	RS512 Algorithm = "RS512"
	PS256 Algorithm = "PS256"
	PS384 Algorithm = "PS384"
	PS512 Algorithm = "PS512"
	ES256 Algorithm = "ES256"
	ES384 Algorithm = "ES384"
	ES512 Algorithm = "ES512"
	EdDSA Algorithm = "EdDSA"
)

// Algorithms lists every supported algorithm in a stable order.
var Algorithms = []Algorithm{HS256, HS384, HS512, RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, ES512, EdDSA}

// RSA key sizes keyd accepts; DefaultRSABits is used when none is configured.
const DefaultRSABits = 2048

// RSABits lists the allowed RSA modulus sizes.
var RSABits = []int{2048, 3072, 4096}

// Family groups algorithms by the kind of key they use.
type Family string

// Key families.
const (
	FamilyHMAC    Family = "hmac"
	FamilyRSA     Family = "rsa"
	FamilyEC      Family = "ec"
	FamilyEd25519 Family = "ed25519"
)

// ParseAlgorithm returns the algorithm named s, or an error wrapping
// ErrUnsupportedAlgorithm that lists the supported ones.
func ParseAlgorithm(s string) (Algorithm, error) {
	for _, a := range Algorithms {
		if string(a) == s {
			return a, nil
		}
	}
	names := make([]string, len(Algorithms))
	for i, a := range Algorithms {
		names[i] = string(a)
	}
	return "", fmt.Errorf("%w: %q (want one of %s)", ErrUnsupportedAlgorithm, s, strings.Join(names, ", "))
}

// Valid reports whether a is a supported algorithm.
func (a Algorithm) Valid() bool {
	_, err := ParseAlgorithm(string(a))
	return err == nil
}

// Family returns the kind of key a uses; "" for an unsupported algorithm.
func (a Algorithm) Family() Family {
	switch a {
	case HS256, HS384, HS512:
		return FamilyHMAC
	case RS256, RS384, RS512, PS256, PS384, PS512:
		return FamilyRSA
	case ES256, ES384, ES512:
		return FamilyEC
	case EdDSA:
		return FamilyEd25519
	}
	return ""
}

// Symmetric reports whether a is an HMAC algorithm. Symmetric keys are never
// published.
func (a Algorithm) Symmetric() bool { return a.Family() == FamilyHMAC }

// Curve returns the elliptic curve of an ES algorithm, nil otherwise.
func (a Algorithm) Curve() elliptic.Curve {
	switch a {
	case ES256:
		return elliptic.P256()
	case ES384:
		return elliptic.P384()
	case ES512:
		return elliptic.P521()
	}
	return nil
}

// SecretSize is the HMAC secret length in bytes: the hash size, as RFC 7518
// section 3.2 asks. Zero for other algorithms.
func (a Algorithm) SecretSize() int {
	switch a {
	case HS256:
		return 32
	case HS384:
		return 48
	case HS512:
		return 64
	}
	return 0
}
