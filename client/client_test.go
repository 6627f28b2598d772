package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	josejwt "github.com/go-jose/go-jose/v4/jwt"

	"github.com/keyd-dev/keyd/client"
	"github.com/keyd-dev/keyd/internal/api/apitest"
	"github.com/keyd-dev/keyd/keystore"
)

func serve(t *testing.T) *apitest.Server {
	return apitest.Serve(t, nil,
		keystore.Policy{Name: "app", Algorithm: keystore.ES256, Rotation: "@daily", TokenTTL: 10 * time.Minute, JWKSMaxAge: time.Minute, Leeway: 30 * time.Second, RefreshTTL: time.Hour},
		keystore.Policy{Name: "plain", Algorithm: keystore.EdDSA, Rotation: "@daily", TokenTTL: 10 * time.Minute, JWKSMaxAge: time.Minute})
}

func newClient(t *testing.T, url, token string, opts ...client.Option) *client.Client {
	t.Helper()
	c, err := client.New(url, append([]client.Option{client.WithToken(token)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestSignVerifyAndErrors(t *testing.T) {
	s := serve(t)
	ctx := context.Background()
	svc := newClient(t, s.URL, apitest.ServiceToken)
	tok, err := svc.Sign(ctx, "app", map[string]any{"sub": "alice", "aud": "billing"}, 5*time.Minute)
	if err != nil || tok.Alg != "ES256" || tok.KID == "" || !tok.ExpiresAt.Equal(s.Clock.Now().Add(5*time.Minute)) {
		t.Fatalf("Sign = %+v, %v", tok, err)
	}
	// The token verifies with an independent library through the JWKS.
	parsed, err := josejwt.ParseSigned(tok.Token, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		t.Fatal(err)
	}
	_, body := s.Call("GET", "/v1/keysets/app/jwks.json", "", "")
	var set jose.JSONWebKeySet
	if err := jsonUnmarshal(body, &set); err != nil {
		t.Fatal(err)
	}
	var claims josejwt.Claims
	if err := parsed.Claims(set.Key(tok.KID)[0].Key, &claims); err != nil || claims.Subject != "alice" {
		t.Fatalf("go-jose: %v %+v", err, claims)
	}
	v, err := svc.Verify(ctx, "app", tok.Token, client.VerifyOptions{Audience: []string{"billing"}})
	if err != nil || !v.Valid || v.Claims["sub"] != "alice" {
		t.Fatalf("Verify = %+v, %v", v, err)
	}
	v, err = svc.Verify(ctx, "app", tok.Token, client.VerifyOptions{Audience: []string{"ledger"}})
	if err != nil || v.Valid || v.Code != "invalid_audience" {
		t.Fatalf("Verify with another audience = %+v, %v", v, err)
	}
	results, err := svc.SignBatch(ctx, "app", []client.SignItem{{Claims: map[string]any{"sub": "a"}}, {Claims: map[string]any{"sub": "b"}, TTL: time.Hour}})
	if err != nil || len(results) != 2 || results[0].Token == nil || results[1].Error == nil || results[1].Error.Code != "bad_request" {
		t.Fatalf("SignBatch = %+v, %v", results, err)
	}

	// Errors keep the API's code.
	if _, err := svc.Sign(ctx, "nope", map[string]any{}, 0); !errors.Is(err, client.ErrKeySetNotFound) {
		t.Errorf("unknown key set: %v", err)
	}
	if _, err := newClient(t, s.URL, "wrong").Sign(ctx, "app", map[string]any{}, 0); !errors.Is(err, client.ErrUnauthorized) {
		t.Errorf("bad token: %v", err)
	}
	if _, err := svc.KeySets(ctx); !errors.Is(err, client.ErrForbidden) {
		t.Errorf("admin call without admin: %v", err)
	}
	var e *client.Error
	if _, err := svc.Sign(ctx, "app", map[string]any{}, time.Hour); !errors.As(err, &e) || e.Status != 400 || e.Code != "bad_request" || e.Message == "" {
		t.Errorf("ttl over the limit: %v", err)
	}
	admin := newClient(t, s.URL, apitest.AdminToken)
	if _, err := admin.Rotate(ctx, "app", false); !errors.Is(err, client.ErrRotationTooEarly) || !errors.As(err, &e) || e.SafeAt.IsZero() {
		t.Errorf("early rotation: %v", err)
	}
}

func TestAdminPairsAndRevocations(t *testing.T) {
	s := serve(t)
	ctx := context.Background()
	svc := newClient(t, s.URL, apitest.ServiceToken)
	admin := newClient(t, s.URL, apitest.AdminToken)
	sets, err := admin.KeySets(ctx)
	if err != nil || len(sets) != 2 || sets[0].Name != "app" || len(sets[0].Keys) != 2 {
		t.Fatalf("KeySets = %+v, %v", sets, err)
	}
	pair, err := svc.TokenPair(ctx, "app", map[string]any{"sub": "alice"})
	if err != nil || pair.TokenType != "Bearer" || pair.ExpiresIn != 600 {
		t.Fatalf("TokenPair = %+v, %v", pair, err)
	}
	next, err := svc.Refresh(ctx, "app", pair.RefreshToken)
	if err != nil || next.RefreshToken == pair.RefreshToken {
		t.Fatalf("Refresh = %+v, %v", next, err)
	}
	if _, err := svc.Refresh(ctx, "app", pair.RefreshToken); !errors.Is(err, client.ErrRefreshTokenReused) {
		t.Fatalf("reuse: %v", err)
	}
	if _, err := svc.TokenPair(ctx, "plain", map[string]any{}); !errors.Is(err, client.ErrRefreshNotEnabled) {
		t.Fatalf("pairs off: %v", err)
	}
	res, err := admin.RevokeTokens(ctx, "app", client.Revocation{Token: next.AccessToken, Reason: "test"})
	if err != nil || res.InForce != 1 {
		t.Fatalf("RevokeTokens = %+v, %v", res, err)
	}
	revs, err := admin.Revocations(ctx, "app")
	if err != nil || len(revs.Tokens) != 1 || revs.Tokens[0].Reason != "test" {
		t.Fatalf("Revocations = %+v, %v", revs, err)
	}
	if v, _ := svc.Verify(ctx, "app", next.AccessToken, client.VerifyOptions{}); v.Code != "token_revoked" {
		t.Fatalf("revoked token: %+v", v)
	}
	ks, err := admin.RevokeKey(ctx, "plain", sets[1].Keys[1].KID)
	if err != nil || ks.Keys[1].State != "revoked" {
		t.Fatalf("RevokeKey = %+v, %v", ks, err)
	}
}

// TestRetriesWhileNotReady: a keyd still starting answers 503 not_ready
// with Retry-After; the client waits and tries again, up to its limit.
func TestRetriesWhileNotReady(t *testing.T) {
	s := serve(t)
	ctx := context.Background()
	s.NotReady.Store(2)
	c := newClient(t, s.URL, apitest.ServiceToken, client.WithRetries(3, 10*time.Millisecond))
	start := time.Now()
	if _, err := c.Sign(ctx, "app", map[string]any{}, 0); err != nil {
		t.Fatalf("Sign after two 503s: %v", err)
	}
	if waited := time.Since(start); waited < 2*time.Second {
		t.Errorf("waited %v, want the Retry-After (1s) twice", waited)
	}
	s.NotReady.Store(5)
	c = newClient(t, s.URL, apitest.ServiceToken, client.WithRetries(1, 10*time.Millisecond))
	if _, err := c.Sign(ctx, "app", map[string]any{}, 0); !errors.Is(err, client.ErrNotReady) {
		t.Fatalf("past the retries: %v", err)
	}
	r, err := c.Ready(ctx)
	if err != nil || r.Status != "starting" {
		t.Fatalf("Ready = %+v, %v", r, err)
	}
	if _, err := client.New("keyd.local:8080"); err == nil {
		t.Error("an address without scheme was accepted")
	}
}

func jsonUnmarshal(s string, v any) error { return json.Unmarshal([]byte(s), v) }
