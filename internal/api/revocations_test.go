package api_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	josejwt "github.com/go-jose/go-jose/v4/jwt"

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

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

type served struct {
	t     *testing.T
	url   string
	clock *clock
	store keystore.Store
}

// serve runs the API on loopback over a real bbolt store, with a clock the
// test moves, and key sets of the given policies.
func serve(t *testing.T, policies ...keystore.Policy) *served {
	t.Helper()
	c := &clock{t: time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)}
	store, err := file.Open(file.Options{Path: filepath.Join(t.TempDir(), "keyd.db"), MasterKey: make([]byte, 32)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	sg := signer.New(c.now, nil)
	pub := jwks.New()
	mgr := rotation.NewManager(rotation.Options{Store: store, Policies: policies, Generator: keystoretest.FastGenerator, Now: c.now,
		Logger: slog.New(slog.DiscardHandler), Listeners: []rotation.Listener{sg, pub}})
	if err := mgr.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	auth := api.NewAuthenticator([]config.Token{
		{Name: "svc", SHA256: daemon.TokenHash("svc-token"), Scopes: []string{"sign:*", "verify:*"}},
		{Name: "ops", SHA256: daemon.TokenHash("ops-token"), Scopes: []string{"admin"}},
	})
	srv := httptest.NewServer(api.New(api.Options{Signer: sg, JWKS: pub, Manager: mgr, Auth: auth, Logger: slog.New(slog.DiscardHandler), Health: mgr.Health}))
	t.Cleanup(srv.Close)
	return &served{t: t, url: srv.URL, clock: c, store: store}
}

func (s *served) call(method, path, token, body string) (int, string) {
	s.t.Helper()
	req, _ := http.NewRequest(method, s.url+path, strings.NewReader(body))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(out)
}

type signedToken struct {
	Token     string
	ExpiresAt time.Time `json:"expires_at"`
}

func (s *served) sign(keyset, claims string) signedToken {
	s.t.Helper()
	code, body := s.call("POST", "/v1/keysets/"+keyset+"/sign", "svc-token", `{"claims":`+claims+`}`)
	if code != 200 {
		s.t.Fatalf("sign: %d %s", code, body)
	}
	var tok signedToken
	_ = json.Unmarshal([]byte(body), &tok)
	return tok
}

func (s *served) verifyCode(keyset, token string) string {
	s.t.Helper()
	code, body := s.call("POST", "/v1/keysets/"+keyset+"/verify", "svc-token", `{"token":"`+token+`"}`)
	var out struct {
		Valid bool
		Code  string
	}
	if code != 200 || json.Unmarshal([]byte(body), &out) != nil || out.Valid == (out.Code != "") {
		s.t.Fatalf("verify: %d %s", code, body)
	}
	return out.Code
}

func jtiOf(t *testing.T, token string) string {
	t.Helper()
	parsed, err := josejwt.ParseSigned(token, []jose.SignatureAlgorithm{jose.ES256, jose.HS256})
	if err != nil {
		t.Fatal(err)
	}
	var c josejwt.Claims
	_ = parsed.UnsafeClaimsWithoutVerification(&c)
	return c.ID
}

func TestRevocations(t *testing.T) {
	p := keystore.Policy{Name: "es", Algorithm: keystore.ES256, Rotation: "@daily", TokenTTL: 10 * time.Minute, JWKSMaxAge: time.Minute, Leeway: 30 * time.Second, MaxRevocations: 4}
	hs := p
	hs.Name, hs.Algorithm = "hs", keystore.HS256
	s := serve(t, p, hs)

	byJTI := s.sign("es", `{"sub":"x"}`)
	byToken := s.sign("es", `{"sub":"y"}`)
	alice1 := s.sign("es", `{"sub":"alice"}`)
	keep := s.sign("es", `{"sub":"bob"}`)

	revoke := func(body string) (int, string) {
		return s.call("POST", "/v1/keysets/es/revocations", "ops-token", body)
	}
	if code, body := revoke(fmt.Sprintf(`{"jti":%q,"exp":%d,"reason":"stolen laptop"}`, jtiOf(t, byJTI.Token), byJTI.ExpiresAt.Unix())); code != 200 || !strings.Contains(body, `"in_force":1`) {
		t.Fatalf("revoke by jti: %d %s", code, body)
	}
	if code, body := revoke(`{"token":"` + byToken.Token + `"}`); code != 200 {
		t.Fatalf("revoke by token: %d %s", code, body)
	}
	if code, body := revoke(`{"sub":"alice","reason":"log out everywhere"}`); code != 200 || !strings.Contains(body, "issued_before") {
		t.Fatalf("revoke by subject: %d %s", code, body)
	}
	s.clock.add(time.Second)
	alice2 := s.sign("es", `{"sub":"alice"}`) // after the cut-off

	for tok, want := range map[string]string{byJTI.Token: signer.CodeRevoked, byToken.Token: signer.CodeRevoked, alice1.Token: signer.CodeRevoked, keep.Token: "", alice2.Token: ""} {
		if got := s.verifyCode("es", tok); got != want {
			t.Errorf("verify: code %q, want %q", got, want)
		}
	}
	// Revoking a revoked token again changes nothing.
	if code, body := revoke(`{"token":"` + byToken.Token + `"}`); code != 200 || !strings.Contains(body, `"in_force":3`) {
		t.Fatalf("revoking twice: %d %s", code, body)
	}

	// The list, and the refusals.
	code, body := s.call("GET", "/v1/keysets/es/revocations", "ops-token", "")
	var list api.RevocationView
	if code != 200 || json.Unmarshal([]byte(body), &list) != nil || len(list.Tokens) != 2 || len(list.Subjects) != 1 || list.Subjects[0].Sub != "alice" {
		t.Fatalf("list: %d %s", code, body)
	}
	for _, tc := range []struct{ body, want string }{
		{`{}`, "exactly one"},
		{`{"jti":"a"}`, "go together"},
		{`{"jti":"a","exp":1}`, "expired already"},
		{fmt.Sprintf(`{"jti":"a","exp":%d}`, s.clock.now().Add(time.Hour).Unix()), "beyond token_ttl"},
		{`{"token":"forged.token.here"}`, "does not verify"},
		{`{"sub":"a","token":"b"}`, "exactly one"},
		{`{"sub":"a","reason":"` + strings.Repeat("x", 300) + `"}`, "reason"},
	} {
		if code, body := revoke(tc.body); code != 400 || !strings.Contains(body, tc.want) {
			t.Errorf("%.60s: %d %s", tc.body, code, body)
		}
	}
	if code, _ := s.call("POST", "/v1/keysets/es/revocations", "svc-token", `{"sub":"a"}`); code != 403 {
		t.Errorf("revoking without admin: %d", code)
	}
	// The limit (4) is a clear 409, and nothing is dropped to make room.
	if code, _ := revoke(`{"sub":"fourth"}`); code != 200 {
		t.Fatal("fourth revocation refused")
	}
	if code, body := revoke(`{"sub":"fifth"}`); code != 409 || !strings.Contains(body, "revocation_limit") {
		t.Fatalf("past the limit: %d %s", code, body)
	}
	if got := s.verifyCode("es", byJTI.Token); got != signer.CodeRevoked {
		t.Fatal("a revocation was dropped at the limit")
	}

	// Published list: a JWT signed by the active key, verifiable through
	// the JWKS with an independent library, cacheable like the JWKS.
	resp, err := http.Get(s.url + "/v1/keysets/es/revocations.jwt")
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Cache-Control") != "public, max-age=60" || resp.Header.Get("ETag") == "" || resp.Header.Get("Content-Type") != "application/jwt" {
		t.Fatalf("revocations.jwt: %d %v", resp.StatusCode, resp.Header)
	}
	_, jwksBody := s.call("GET", "/v1/keysets/es/jwks.json", "", "")
	var set jose.JSONWebKeySet
	_ = json.Unmarshal([]byte(jwksBody), &set)
	parsed, err := josejwt.ParseSigned(string(raw), []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		t.Fatal(err)
	}
	var claims struct {
		josejwt.Claims
		Tokens []struct {
			JTI string `json:"jti"`
			Exp int64  `json:"exp"`
		} `json:"revoked_jti"`
		Subjects []struct {
			Sub    string `json:"sub"`
			Before int64  `json:"iat_before"`
		} `json:"revoked_sub"`
	}
	if err := parsed.Claims(set.Key(parsed.Headers[0].KeyID)[0].Key, &claims); err != nil {
		t.Fatalf("go-jose rejects the list: %v", err)
	}
	if err := claims.ValidateWithLeeway(josejwt.Expected{AnyAudience: []string{signer.RevocationListAudience}, Time: s.clock.now()}, 0); err != nil || len(claims.Tokens) != 2 || len(claims.Subjects) != 2 {
		t.Fatalf("list claims: %+v, %v", claims, err)
	}
	if code, _ := s.call("GET", "/v1/keysets/hs/revocations.jwt", "", ""); code != 404 {
		t.Errorf("an HMAC key set's list: %d", code)
	}

	// Entries leave once their tokens would have expired anyway.
	s.clock.add(11 * time.Minute)
	code, body = s.call("GET", "/v1/keysets/es/revocations", "ops-token", "")
	if code != 200 || !strings.Contains(body, `"tokens":[]`) || !strings.Contains(body, `"subjects":[]`) {
		t.Fatalf("after expiry: %d %s", code, body)
	}
	if code, _ := revoke(`{"sub":"fifth"}`); code != 200 {
		t.Fatal("expired entries still count against the limit")
	}
	ks, _ := s.store.Get(context.Background(), "es")
	if ks.Revocations.Len() != 1 {
		t.Fatalf("the store kept %d entries, want the one in force", ks.Revocations.Len())
	}
}
