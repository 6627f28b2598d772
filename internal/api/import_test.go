package api_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	josejwt "github.com/go-jose/go-jose/v4/jwt"

	"github.com/keyd-dev/keyd/internal/api/apitest"
	"github.com/keyd-dev/keyd/keystore"
)

func rsaPolicy(name string) keystore.Policy {
	return keystore.Policy{Name: name, Algorithm: keystore.RS256, Rotation: "@daily", TokenTTL: 5 * time.Minute,
		JWKSMaxAge: time.Minute, Leeway: time.Second}
}

// mint signs claims as another issuer would (go-jose, not keyd).
func mint(t *testing.T, alg jose.SignatureAlgorithm, key any, kid string, claims map[string]any) string {
	t.Helper()
	opts := (&jose.SignerOptions{}).WithType("JWT")
	if kid != "" {
		opts = opts.WithHeader("kid", kid)
	}
	sig, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: key}, opts)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := josejwt.Signed(sig).Claims(claims).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func pemOf(t *testing.T, typ string, der []byte) string {
	return string(pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}))
}

func importKey(t *testing.T, s *apitest.Server, keyset string, body map[string]any) (int, string) {
	t.Helper()
	b, _ := json.Marshal(body)
	return s.Call("POST", "/v1/keysets/"+keyset+"/keys/import", apitest.AdminToken, string(b))
}

// Tokens of the old signer (an RS256 PEM pair with kid "key-2024", another
// issuer's JWKS) keep verifying after they move to keyd, until
// verify_until; their public keys are in keyd's JWKS; nothing imported
// ever comes back out.
func TestImportKeepsTokensInFlight(t *testing.T) {
	s := apitest.Serve(t, nil, rsaPolicy("app"))
	old, _ := rsa.GenerateKey(rand.Reader, 2048)
	now := s.Clock.Now()
	inFlight := mint(t, jose.RS256, old, "key-2024", map[string]any{"sub": "alice", "exp": now.Add(time.Hour).Unix()})
	if c := verifyCode(t, s, "app", inFlight); c != "unknown_key" {
		t.Fatalf("before the import: %q", c)
	}
	// PKCS #1, as openssl genrsa -traditional writes it.
	privPEM := pemOf(t, "RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(old))
	code, body := importKey(t, s, "app", map[string]any{"pem": privPEM, "kid": "key-2024", "verify_until": now.Add(2 * time.Hour)})
	if code != 200 || !strings.Contains(body, `"kid":"key-2024"`) || !strings.Contains(body, `"imported":true`) {
		t.Fatalf("import: %d %s", code, body)
	}
	if strings.Contains(body, "PRIVATE") || strings.Contains(body, `"material"`) {
		t.Fatalf("the answer holds key material: %s", body)
	}
	if c := verifyCode(t, s, "app", inFlight); c != "" {
		t.Fatalf("a token of the imported key: %q", c)
	}
	// Published: go-jose verifies the old token through keyd's JWKS.
	_, jwksBody := s.Call("GET", "/v1/keysets/app/jwks.json", "", "")
	var set jose.JSONWebKeySet
	_ = json.Unmarshal([]byte(jwksBody), &set)
	keys := set.Key("key-2024")
	if len(keys) != 1 || !keys[0].IsPublic() {
		t.Fatalf("key-2024 in the JWKS: %s", jwksBody)
	}
	parsed, _ := josejwt.ParseSigned(inFlight, []jose.SignatureAlgorithm{jose.RS256})
	var claims josejwt.Claims
	if err := parsed.Claims(keys[0].Key, &claims); err != nil || claims.Subject != "alice" {
		t.Fatalf("go-jose through keyd's JWKS: %v", err)
	}
	// The same kid again is 409; a verify-only key never signs.
	if code, body := importKey(t, s, "app", map[string]any{"pem": privPEM, "kid": "key-2024"}); code != 409 || !strings.Contains(body, "key_exists") {
		t.Fatalf("the same kid again: %d %s", code, body)
	}
	tok := signAt(t, s, "app", `{"sub":"bob"}`)
	if parsed, _ := josejwt.ParseSigned(tok.Token, []jose.SignatureAlgorithm{jose.RS256}); parsed.Headers[0].KeyID == "key-2024" {
		t.Fatal("a retired imported key signed")
	}

	// Another issuer's JWKS, public keys only.
	other, _ := rsa.GenerateKey(rand.Reader, 2048)
	otherJWKS, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: other.Public(), KeyID: "other-1", Algorithm: "RS256", Use: "sig"}}})
	if code, body := importKey(t, s, "app", map[string]any{"jwks": json.RawMessage(otherJWKS)}); code != 200 || !strings.Contains(body, `"public_only":true`) {
		t.Fatalf("import a JWKS: %d %s", code, body)
	}
	otherTok := mint(t, jose.RS256, other, "other-1", map[string]any{"sub": "carol", "exp": now.Add(time.Hour).Unix()})
	if c := verifyCode(t, s, "app", otherTok); c != "" {
		t.Fatalf("the other issuer's token: %q", c)
	}

	// After verify_until the key is destroyed: its tokens no longer verify.
	s.Clock.Add(2*time.Hour + time.Second)
	if _, err := s.Manager.Tick(t.Context(), "app"); err != nil {
		t.Fatal(err)
	}
	if c := verifyCode(t, s, "app", mint(t, jose.RS256, old, "key-2024", map[string]any{"exp": s.Clock.Now().Add(time.Minute).Unix()})); c != "unknown_key" {
		t.Fatalf("after verify_until: %q", c)
	}
}

// An imported private key made active signs at once (with force, as a
// forced rotation); without force it is refused like an early rotation.
func TestImportActive(t *testing.T) {
	s := apitest.Serve(t, nil, rsaPolicy("app"))
	k, _ := rsa.GenerateKey(rand.Reader, 2048)
	der, _ := x509.MarshalPKCS8PrivateKey(k)
	body := map[string]any{"pem": pemOf(t, "PRIVATE KEY", der), "kid": "legacy-main", "state": "active"}
	code, out := importKey(t, s, "app", body)
	if code != 409 || !strings.Contains(out, "rotation_too_early") {
		t.Fatalf("active without force: %d %s", code, out)
	}
	body["force"] = true
	if code, out := importKey(t, s, "app", body); code != 200 || !strings.Contains(out, `"kid":"legacy-main","alg":"RS256","state":"active"`) {
		t.Fatalf("active with force: %d %s", code, out)
	}
	tok := signAt(t, s, "app", `{"sub":"dave"}`)
	parsed, err := josejwt.ParseSigned(tok.Token, []jose.SignatureAlgorithm{jose.RS256})
	if err != nil || parsed.Headers[0].KeyID != "legacy-main" {
		t.Fatalf("signed by %v (%v)", parsed.Headers, err)
	}
	var c josejwt.Claims
	if err := parsed.Claims(&k.PublicKey, &c); err != nil || c.Subject != "dave" {
		t.Fatalf("the imported key's own public half: %v", err)
	}
}

// Every bad input is a 400 that names the problem, and nothing is stored.
func TestImportRefusesBadInput(t *testing.T) {
	s := apitest.Serve(t, nil, rsaPolicy("app"), keystore.Policy{Name: "hs", Algorithm: keystore.HS256, Rotation: "@daily",
		TokenTTL: 5 * time.Minute, JWKSMaxAge: time.Minute})
	small, _ := rsa.GenerateKey(rand.Reader, 1024)
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ecDER, _ := x509.MarshalPKCS8PrivateKey(ec)
	good, _ := rsa.GenerateKey(rand.Reader, 2048)
	goodDER, _ := x509.MarshalPKCS8PrivateKey(good)
	pubDER, _ := x509.MarshalPKIXPublicKey(&good.PublicKey)
	encrypted := "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIBvTBXBgkqhkiG9w0BBQ0wSjApBgkqhkiG9w0BBQwwHAQI\n-----END ENCRYPTED PRIVATE KEY-----\n"
	privJWKS, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: good, KeyID: "p", Algorithm: "RS256"}}})
	_, before := s.Call("GET", "/v1/keysets/app", apitest.AdminToken, "")
	for name, tc := range map[string]struct {
		keyset string
		body   map[string]any
		want   string
	}{
		"RSA 1024":           {"app", map[string]any{"pem": pemOf(t, "RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(small))}, "1024 bits"},
		"EC into RS256":      {"app", map[string]any{"pem": pemOf(t, "PRIVATE KEY", ecDER)}, "an RSA key"},
		"encrypted PEM":      {"app", map[string]any{"pem": encrypted}, "openssl pkey"},
		"two keys":           {"app", map[string]any{"pem": pemOf(t, "PRIVATE KEY", goodDER) + pemOf(t, "PUBLIC KEY", pubDER)}, "holds 2 keys"},
		"no key":             {"app", map[string]any{"pem": "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"}, "holds no key"},
		"not PEM":            {"app", map[string]any{"pem": "hello"}, "not PEM"},
		"private in a JWKS":  {"app", map[string]any{"jwks": json.RawMessage(privJWKS)}, "private key"},
		"active public key":  {"app", map[string]any{"pem": pemOf(t, "PUBLIC KEY", pubDER), "state": "active", "force": true}, "no private half"},
		"pending public key": {"app", map[string]any{"pem": pemOf(t, "PUBLIC KEY", pubDER), "state": "pending"}, "no private half"},
		"past verify_until":  {"app", map[string]any{"pem": pemOf(t, "PUBLIC KEY", pubDER), "verify_until": s.Clock.Now().Add(-time.Minute)}, "has passed"},
		"secret into RS256":  {"app", map[string]any{"secret": strings.Repeat("s", 40)}, "not an HMAC secret"},
		"PEM into HS256":     {"hs", map[string]any{"pem": pemOf(t, "PRIVATE KEY", goodDER)}, "HMAC secret"},
		"short secret signs": {"hs", map[string]any{"secret": "changeme", "state": "pending"}, "verify-only"},
		"two formats":        {"app", map[string]any{"pem": pemOf(t, "PUBLIC KEY", pubDER), "secret": "x"}, "exactly one"},
		"bad state":          {"app", map[string]any{"pem": pemOf(t, "PUBLIC KEY", pubDER), "state": "revoked"}, "want retired"},
	} {
		code, out := importKey(t, s, tc.keyset, tc.body)
		if code != 400 || !strings.Contains(out, tc.want) {
			t.Errorf("%s: %d %s (want 400 saying %q)", name, code, out, tc.want)
		}
		if strings.Contains(out, "-----BEGIN") || strings.Contains(out, "MII") || strings.Contains(out, "ssss") {
			t.Errorf("%s: the error holds material: %s", name, out)
		}
	}
	if _, after := s.Call("GET", "/v1/keysets/app", apitest.AdminToken, ""); after != before {
		t.Fatalf("a refused import changed the key set:\n%s\n%s", before, after)
	}
	// A short HMAC secret verify-only: accepted with a warning.
	code, out := importKey(t, s, "hs", map[string]any{"secret": "changeme"})
	if code != 200 || !strings.Contains(out, "less than the 32") {
		t.Fatalf("short secret verify-only: %d %s", code, out)
	}
}
