package api_test

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keyd-dev/keyd/backends/file"
	"github.com/keyd-dev/keyd/internal/api"
	"github.com/keyd-dev/keyd/internal/config"
	"github.com/keyd-dev/keyd/internal/daemon"
	"github.com/keyd-dev/keyd/jwks"
	"github.com/keyd-dev/keyd/keystore"
	"github.com/keyd-dev/keyd/keystore/keystoretest"
	"github.com/keyd-dev/keyd/rotation"
	"github.com/keyd-dev/keyd/signer"
)

func TestScopes(t *testing.T) {
	a := api.NewAuthenticator([]config.Token{
		{Name: "svc", SHA256: daemon.TokenHash("svc-token"), Scopes: []string{"sign:*", "verify:billing"}},
		{Name: "ops", SHA256: daemon.TokenHash("ops-token"), Scopes: []string{"admin"}},
	})
	for _, h := range []string{"", "svc-token", "Bearer", "Bearer ", "Basic svc-token", "Bearer svc-token2"} {
		if _, ok := a.Authenticate(h); ok {
			t.Errorf("Authenticate(%q) accepted", h)
		}
	}
	p, ok := a.Authenticate("Bearer svc-token")
	if !ok || p.Name != "svc" {
		t.Fatalf("svc token: %v %v", p, ok)
	}
	for scope, want := range map[string]bool{"sign:a": true, "sign:billing": true, "verify:billing": true, "verify:a": false, "admin": false} {
		if p.Can(scope) != want {
			t.Errorf("svc Can(%s) = %v", scope, !want)
		}
	}
	if p, ok := a.Authenticate("bearer ops-token"); !ok || !p.Can("admin") || p.Can("sign:a") {
		t.Fatalf("ops token: admin must not imply signing")
	}
}

func newHandler(tb testing.TB, alg keystore.Algorithm) http.Handler {
	tb.Helper()
	store, err := file.Open(file.Options{Path: filepath.Join(tb.TempDir(), "keyd.db"), MasterKey: make([]byte, 32)})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = store.Close() })
	sg := signer.New(time.Now)
	pub := jwks.New()
	p := keystore.Policy{Name: "bench", Algorithm: alg, Rotation: "@daily", TokenTTL: 15 * time.Minute, JWKSMaxAge: 5 * time.Minute, Leeway: time.Minute}
	mgr := rotation.NewManager(rotation.Options{Logger: slog.New(slog.DiscardHandler), Store: store, Policies: []keystore.Policy{p}, Generator: keystoretest.FastGenerator, Listeners: []rotation.Listener{sg, pub}})
	if err := mgr.Start(context.Background()); err != nil {
		tb.Fatal(err)
	}
	auth := api.NewAuthenticator([]config.Token{{Name: "svc", SHA256: daemon.TokenHash("svc-token"), Scopes: []string{"sign:*"}}})
	return api.New(api.Options{Signer: sg, JWKS: pub, Manager: mgr, Auth: auth, Logger: slog.New(slog.DiscardHandler)})
}

// BenchmarkSignHandler measures a sign request through the whole HTTP
// handler (auth, decoding, signing, encoding), without the network.
func BenchmarkSignHandler(b *testing.B) {
	for _, alg := range []keystore.Algorithm{keystore.HS256, keystore.RS256, keystore.ES256, keystore.EdDSA} {
		b.Run(string(alg), func(b *testing.B) {
			h := newHandler(b, alg)
			body := `{"claims": {"sub": "alice", "aud": "billing"}, "ttl": "5m"}`
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					req := httptest.NewRequest("POST", "/v1/keysets/bench/sign", strings.NewReader(body))
					req.Header.Set("Authorization", "Bearer svc-token")
					rec := httptest.NewRecorder()
					h.ServeHTTP(rec, req)
					if rec.Code != 200 {
						b.Fatalf("status %d: %s", rec.Code, rec.Body)
					}
				}
			})
		})
	}
}

func TestSignHandlerLeavesNoSecretInErrors(t *testing.T) {
	h := newHandler(t, keystore.HS256)
	req := httptest.NewRequest("POST", "/v1/keysets/bench/sign", strings.NewReader(`{"claims": {"exp": "x"}}`))
	req.Header.Set("Authorization", "Bearer svc-token")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != 400 || !strings.Contains(rec.Body.String(), "NumericDate") || rec.Header().Get("Content-Type") != "application/json" {
		t.Fatalf("bad exp: %d %s", rec.Code, rec.Body)
	}
}
