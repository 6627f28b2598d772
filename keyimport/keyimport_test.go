package keyimport_test

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/keyd-dev/keyd/keyimport"
	"github.com/keyd-dev/keyd/keystore"
)

var now = time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)

func pemOf(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

func TestFormats(t *testing.T) {
	ec, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	ecPKCS8, _ := x509.MarshalPKCS8PrivateKey(ec)
	ecSEC1, _ := x509.MarshalECPrivateKey(ec)
	ecPub, _ := x509.MarshalPKIXPublicKey(&ec.PublicKey)
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	_, edKey, _ := ed25519.GenerateKey(rand.Reader)
	edPKCS8, _ := x509.MarshalPKCS8PrivateKey(edKey)
	rsaJWK, _ := json.Marshal(jose.JSONWebKey{Key: rsaKey, KeyID: "rsa-2024", Algorithm: "PS256"})
	octJWK, _ := json.Marshal(jose.JSONWebKey{Key: []byte(strings.Repeat("k", 48)), KeyID: "oct-1"})
	for name, tc := range map[string]struct {
		alg        keystore.Algorithm
		in         keyimport.Input
		kid        string // "" : a thumbprint
		publicOnly bool
	}{
		"EC PKCS #8":        {keystore.ES384, keyimport.Input{PEM: pemOf("PRIVATE KEY", ecPKCS8)}, "", false},
		"EC SEC 1":          {keystore.ES384, keyimport.Input{PEM: pemOf("EC PRIVATE KEY", ecSEC1)}, "", false},
		"EC PKIX public":    {keystore.ES384, keyimport.Input{PEM: pemOf("PUBLIC KEY", ecPub), KID: "their-kid"}, "their-kid", true},
		"RSA PKCS #1":       {keystore.RS512, keyimport.Input{PEM: pemOf("RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(rsaKey))}, "", false},
		"RSA public PKCS1":  {keystore.PS256, keyimport.Input{PEM: pemOf("RSA PUBLIC KEY", x509.MarshalPKCS1PublicKey(&rsaKey.PublicKey))}, "", true},
		"Ed25519":           {keystore.EdDSA, keyimport.Input{PEM: pemOf("PRIVATE KEY", edPKCS8)}, "", false},
		"JWK keeps its kid": {keystore.PS256, keyimport.Input{JWK: rsaJWK}, "rsa-2024", false},
		"oct JWK":           {keystore.HS384, keyimport.Input{JWK: octJWK}, "oct-1", false},
	} {
		keys, warnings, err := keyimport.Parse(tc.alg, tc.in, now)
		if err != nil || len(keys) != 1 || len(warnings) != 0 {
			t.Errorf("%s: %v %v %v", name, keys, warnings, err)
			continue
		}
		k := keys[0]
		if (tc.kid != "" && k.ID != tc.kid) || (tc.kid == "" && len(k.ID) != 43) || k.PublicOnly != tc.publicOnly || k.Algorithm != tc.alg {
			t.Errorf("%s: kid %q public_only %v alg %s", name, k.ID, k.PublicOnly, k.Algorithm)
		}
		if _, err := k.VerificationKey(); err != nil {
			t.Errorf("%s: the key does not parse back: %v", name, err)
		}
	}
}

func TestRefused(t *testing.T) {
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ecPKCS8, _ := x509.MarshalPKCS8PrivateKey(ec)
	rsaJWK, _ := json.Marshal(jose.JSONWebKey{Key: &ec.PublicKey, KeyID: "x", Algorithm: "ES256"})
	for name, tc := range map[string]struct {
		alg  keystore.Algorithm
		in   keyimport.Input
		want string
	}{
		"wrong curve":     {keystore.ES384, keyimport.Input{PEM: pemOf("PRIVATE KEY", ecPKCS8)}, "P-256; ES384 needs P-384"},
		"JWK for ES256":   {keystore.ES512, keyimport.Input{JWK: rsaJWK}, "is for ES256"},
		"long kid":        {keystore.ES256, keyimport.Input{PEM: pemOf("PRIVATE KEY", ecPKCS8), KID: strings.Repeat("k", 200)}, "1 to 128"},
		"kid with spaces": {keystore.ES256, keyimport.Input{PEM: pemOf("PRIVATE KEY", ecPKCS8), KID: "a b"}, "printable"},
		"empty secret":    {keystore.HS256, keyimport.Input{}, "exactly one"},
		"bad JWK":         {keystore.ES256, keyimport.Input{JWK: []byte(`{"kty":"EC"}`)}, "does not parse"},
		"empty JWKS":      {keystore.ES256, keyimport.Input{JWKS: []byte(`{"keys":[]}`)}, "holds no key"},
		// The first review's typo: "not a an EC private key".
		"key for HMAC": {keystore.HS256, keyimport.Input{PEM: pemOf("PRIVATE KEY", ecPKCS8)}, "signs with an HMAC secret, not an EC private key: import it with secret"},
	} {
		_, _, err := keyimport.Parse(tc.alg, tc.in, now)
		if !errors.Is(err, keystore.ErrInvalidImport) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v (want %q)", name, err, tc.want)
		}
	}
	// A short secret is a warning, not an error: it may verify.
	_, warnings, err := keyimport.Parse(keystore.HS256, keyimport.Input{Secret: []byte("changeme")}, now)
	if err != nil || len(warnings) != 1 || strings.Contains(warnings[0], "changeme") {
		t.Errorf("short secret: %v %v", warnings, err)
	}
}
