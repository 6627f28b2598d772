package api_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/keyd-dev/keyd/certs"
	"github.com/keyd-dev/keyd/internal/api/apitest"
	"github.com/keyd-dev/keyd/keystore"
)

// Verification windows hold to the second, whatever the scheduler has done:
// a token of a key imported with verify_until T, and a kid-less legacy
// token with legacy.until T, verify until T and are refused from T on. The
// imported key verified until the scheduler's next tick removed it
// (about T + 50 s).
func TestWindowsEndToTheSecond(t *testing.T) {
	now := time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)
	end := now.Add(5 * time.Second)
	legacy := keystore.Policy{Name: "legacy", Algorithm: keystore.HS256, Rotation: "@daily", TokenTTL: 10 * time.Minute, JWKSMaxAge: time.Minute,
		Legacy: keystore.LegacyPolicy{KID: "flask", Until: end}}
	s := apitest.Serve(t, nil, legacy, rsaPolicy("app"))
	const secret = "the-flask-apps-SECRET_KEY-0123456789abcdef"
	if code, body := importKey(t, s, "legacy", map[string]any{"secret": secret, "kid": "flask"}); code != 200 {
		t.Fatalf("import the secret: %d %s", code, body)
	}
	old, _ := rsa.GenerateKey(rand.Reader, 2048)
	der, _ := x509.MarshalPKCS8PrivateKey(old)
	if code, body := importKey(t, s, "app", map[string]any{"pem": pemOf(t, "PRIVATE KEY", der), "kid": "key-2024", "verify_until": end}); code != 200 {
		t.Fatalf("import the RSA key: %d %s", code, body)
	}
	imported := mint(t, jose.RS256, old, "key-2024", map[string]any{"sub": "dave", "exp": now.Add(time.Hour).Unix()})
	kidless := mint(t, jose.HS256, []byte(secret), "", map[string]any{"sub": "carol", "exp": now.Add(time.Hour).Unix()})
	s.Clock.Add(end.Sub(s.Clock.Now()) - time.Second)
	if c := verifyCode(t, s, "app", imported); c != "" {
		t.Fatalf("a second before verify_until: %q", c)
	}
	if c := verifyCode(t, s, "legacy", kidless); c != "" {
		t.Fatalf("a second before legacy.until: %q", c)
	}
	s.Clock.Add(time.Second)
	if c := verifyCode(t, s, "app", imported); c != "unknown_key" {
		t.Fatalf("at verify_until: %q, want unknown_key", c)
	}
	if c := verifyCode(t, s, "legacy", kidless); c != "unknown_key" {
		t.Fatalf("at legacy.until: %q, want unknown_key", c)
	}
}

// A revoked key's certificate is withdrawn with it: its .crt answers 404
// and the JWKS no longer holds the key or its x5c.
func TestRevokedKeysCertificateWithdrawn(t *testing.T) {
	p := rsaPolicy("app")
	p.Certificates = certs.SelfSigned(30 * 24 * time.Hour)
	s := apitest.Serve(t, nil, p)
	ks, _, err := s.Manager.KeySet("app")
	if err != nil {
		t.Fatal(err)
	}
	active, _ := ks.Active()
	if code, body := s.Call("GET", "/v1/keysets/app/keys/"+active.ID+".crt", "", ""); code != 200 || !strings.Contains(body, "BEGIN CERTIFICATE") {
		t.Fatalf("the active key's certificate: %d %s", code, body)
	}
	if code, body := s.Call("POST", "/v1/keysets/app/keys/"+active.ID+"/revoke", apitest.AdminToken, ""); code != 200 {
		t.Fatalf("revoke: %d %s", code, body)
	}
	if code, body := s.Call("GET", "/v1/keysets/app/keys/"+active.ID+".crt", "", ""); code != 404 {
		t.Fatalf("a revoked key's certificate: %d %s", code, body)
	}
	if _, body := s.Call("GET", "/v1/keysets/app/jwks.json", "", ""); strings.Contains(body, active.ID) {
		t.Fatalf("the JWKS still holds the revoked key: %s", body)
	}
}

// A typo in legacy.kid (flsk for flask) is refused by a reload, naming the
// keys there are: it passed, and every token without a kid then failed
// unknown_key. So is a legacy.until past the legacy key's verify_until.
func TestLegacyKIDTypoRefused(t *testing.T) {
	now := time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)
	p := keystore.Policy{Name: "legacy", Algorithm: keystore.HS256, Rotation: "@daily", TokenTTL: 10 * time.Minute, JWKSMaxAge: time.Minute}
	s := apitest.Serve(t, nil, p)
	if code, body := importKey(t, s, "legacy", map[string]any{"secret": "the-flask-apps-SECRET_KEY-0123456789abcdef", "kid": "flask", "verify_until": now.Add(24 * time.Hour)}); code != 200 {
		t.Fatalf("import: %d %s", code, body)
	}
	reload := func(kid string, until time.Time) error {
		q := p
		q.Legacy = keystore.LegacyPolicy{KID: kid, Until: until}
		return s.Manager.Reconfigure(context.Background(), []keystore.Policy{q})
	}
	if err := reload("flsk", now.Add(time.Hour)); err == nil || !strings.Contains(err.Error(), `legacy.kid "flsk"`) || !strings.Contains(err.Error(), "flask") {
		t.Fatalf("a typo in legacy.kid: %v", err)
	}
	if err := reload("flask", now.Add(48*time.Hour)); err == nil || !strings.Contains(err.Error(), "verify_until") {
		t.Fatalf("legacy.until past the key's verify_until: %v", err)
	}
	if err := reload("flask", now.Add(time.Hour)); err != nil {
		t.Fatalf("a right legacy setting: %v", err)
	}
}
