package api_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"fmt"
	"log/slog"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/keyd-dev/keyd/internal/api/apitest"
	"github.com/keyd-dev/keyd/keystore"
	"github.com/keyd-dev/keyd/rotation"
	"github.com/keyd-dev/keyd/signer"
	"github.com/keyd-dev/keyd/tokenstate/records"
)

// Revocations live as long as the tokens they revoke: a legacy token
// without exp (PyJWT's kid-less HS256), a token of an imported key that
// lives a day, and their subjects, revoked, then keyd pruned and
// restarted well past token_ttl: each still refused. Before, revoking the
// token without exp panicked the handler (500), its jti could not be
// revoked ("beyond token_ttl"), and the subject's entry lapsed at the
// cut-off + token_ttl.
func TestRevocationsOutliveLongTokens(t *testing.T) {
	now := time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)
	legacy := keystore.Policy{Name: "legacy", Algorithm: keystore.HS256, Rotation: "@daily", TokenTTL: 10 * time.Minute, JWKSMaxAge: time.Minute, Leeway: 30 * time.Second,
		Legacy: keystore.LegacyPolicy{KID: "flask", Until: now.Add(30 * 24 * time.Hour), AllowMissingExp: true}}
	app := rsaPolicy("app")
	s := apitest.Serve(t, nil, legacy, app)
	const secret = "the-flask-apps-SECRET_KEY-0123456789abcdef"
	if code, body := importKey(t, s, "legacy", map[string]any{"secret": secret, "kid": "flask"}); code != 200 {
		t.Fatalf("import the secret: %d %s", code, body)
	}
	old, _ := rsa.GenerateKey(rand.Reader, 2048)
	der, _ := x509.MarshalPKCS8PrivateKey(old)
	if code, body := importKey(t, s, "app", map[string]any{"pem": pemOf(t, "PRIVATE KEY", der), "kid": "key-2024", "verify_until": now.Add(48 * time.Hour)}); code != 200 {
		t.Fatalf("import the RSA key: %d %s", code, body)
	}
	noExp := mint(t, jose.HS256, []byte(secret), "", map[string]any{"sub": "carol", "jti": "j-noexp"})
	legacyByJTI := mint(t, jose.HS256, []byte(secret), "", map[string]any{"sub": "erin", "jti": "j-legacy", "exp": now.Add(7 * 24 * time.Hour).Unix()})
	legacySub := mint(t, jose.HS256, []byte(secret), "", map[string]any{"sub": "frank", "iat": now.Add(-time.Hour).Unix()})
	dayLong := mint(t, jose.RS256, old, "key-2024", map[string]any{"sub": "dave", "jti": "j-day", "exp": now.Add(24 * time.Hour).Unix()})
	daySub := mint(t, jose.RS256, old, "key-2024", map[string]any{"sub": "gina", "iat": now.Add(-time.Hour).Unix(), "exp": now.Add(24 * time.Hour).Unix()})
	for ks, tok := range map[string]string{"legacy": noExp, "app": dayLong} {
		if c := verifyCode(t, s, ks, tok); c != "" {
			t.Fatalf("before revoking, %s: %q", ks, c)
		}
	}
	revoke := func(keyset, body string) {
		t.Helper()
		if code, out := s.Call("POST", "/v1/keysets/"+keyset+"/revocations", "ops-token", body); code != 200 {
			t.Fatalf("revoke %s %s: %d %s", keyset, body, code, out)
		}
	}
	revoke("legacy", `{"token":"`+noExp+`"}`)
	revoke("legacy", fmt.Sprintf(`{"jti":"j-legacy","exp":%d}`, now.Add(7*24*time.Hour).Unix()))
	revoke("legacy", `{"sub":"frank"}`)
	revoke("app", fmt.Sprintf(`{"jti":"j-day","exp":%d}`, now.Add(24*time.Hour).Unix()))
	revoke("app", `{"sub":"gina"}`)
	if code, out := s.Call("POST", "/v1/keysets/app/revocations", "ops-token", fmt.Sprintf(`{"jti":"x","exp":%d}`, now.Add(72*time.Hour).Unix())); code != 400 {
		t.Fatalf("a jti whose exp outlives every key: %d %s", code, out)
	}

	// Twelve hours on: far past token_ttl, within the tokens' lives.
	s.Clock.Add(12 * time.Hour)
	if _, err := s.Manager.PruneRevocations(context.Background()); err != nil {
		t.Fatal(err)
	}
	check := func(verify func(keyset, tok string) string) {
		t.Helper()
		for _, c := range []struct{ keyset, tok string }{{"legacy", noExp}, {"legacy", legacyByJTI}, {"legacy", legacySub}, {"app", dayLong}, {"app", daySub}} {
			if got := verify(c.keyset, c.tok); got != signer.CodeRevoked {
				t.Errorf("a revoked %s token, 12 hours on: %q, want revoked", c.keyset, got)
			}
		}
	}
	check(func(ks, tok string) string { return verifyCode(t, s, ks, tok) })

	// A restart: a new manager and signer on the same store.
	sg := signer.New(s.Clock.Now, nil)
	mgr := rotation.NewManager(rotation.Options{Store: s.Store, Policies: []keystore.Policy{legacy, app}, Now: s.Clock.Now,
		Logger: slog.New(slog.DiscardHandler), Listeners: []rotation.Listener{sg}, TokenState: records.New(s.Store), Revocations: sg.Revocations()})
	if err := mgr.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	check(func(ks, tok string) string {
		_, err := sg.Verify(ks, tok, signer.Expect{})
		return signer.Code(err)
	})
}
