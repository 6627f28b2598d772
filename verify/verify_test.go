package verify_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	josejwt "github.com/go-jose/go-jose/v4/jwt"

	"github.com/keyd-dev/keyd/internal/api/apitest"
	"github.com/keyd-dev/keyd/keystore"
	"github.com/keyd-dev/keyd/signer"
	"github.com/keyd-dev/keyd/verify"
)

func sign(t *testing.T, s *apitest.Server, claims string) string {
	t.Helper()
	code, body := s.Call("POST", "/v1/keysets/es/sign", apitest.ServiceToken, `{"claims":`+claims+`}`)
	var out struct{ Token string }
	if code != 200 || json.Unmarshal([]byte(body), &out) != nil {
		t.Fatalf("sign: %d %s", code, body)
	}
	return out.Token
}

func setup(t *testing.T, maxAge time.Duration) (*apitest.Server, context.Context) {
	s := apitest.Serve(t, nil, keystore.Policy{Name: "es", Algorithm: keystore.ES256, Rotation: "@daily",
		TokenTTL: 10 * time.Minute, JWKSMaxAge: maxAge, Leeway: 30 * time.Second, Issuer: "https://keyd.test"})
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	return s, ctx
}

func TestVerifyLocallyWithKeydsRules(t *testing.T) {
	s, ctx := setup(t, time.Minute)
	good := sign(t, s, `{"sub":"alice","aud":["billing"]}`)
	stolen := sign(t, s, `{"sub":"mallory"}`)
	loggedOut := sign(t, s, `{"sub":"bob"}`)
	for _, body := range []string{`{"token":"` + stolen + `"}`, `{"sub":"bob"}`} {
		if code, out := s.Call("POST", "/v1/keysets/es/revocations", apitest.AdminToken, body); code != 200 {
			t.Fatalf("revoke: %d %s", code, out)
		}
	}
	v, err := verify.New(ctx, s.URL, "es", verify.Options{Algorithm: "ES256", Issuer: "https://keyd.test", Now: s.Clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	claims, err := v.Verify(ctx, good)
	if err != nil || claims["sub"] != "alice" {
		t.Fatalf("good token: %v %v", claims, err)
	}
	parts := strings.Split(good, ".")
	for name, tc := range map[string]struct {
		token, code string
		opts        verify.Options
	}{
		"revoked by jti":     {stolen, signer.CodeRevoked, verify.Options{}},
		"revoked by subject": {loggedOut, signer.CodeRevoked, verify.Options{}},
		"garbage":            {"garbage", signer.CodeMalformed, verify.Options{}},
		"bad signature":      {parts[0] + "." + parts[1] + "." + parts[2][:10] + "AAAA" + parts[2][14:], signer.CodeSignature, verify.Options{}},
		"wrong audience":     {good, signer.CodeAudience, verify.Options{Audience: []string{"ledger"}}},
		"wrong type":         {good, signer.CodeType, verify.Options{Type: "at+jwt"}},
		"required claim":     {good, signer.CodeMissingClaim, verify.Options{RequiredClaims: []string{"scope"}}},
	} {
		vv := v
		if tc.opts.Audience != nil || tc.opts.Type != "" || tc.opts.RequiredClaims != nil {
			tc.opts.Algorithm, tc.opts.Now = "ES256", s.Clock.Now
			if vv, err = verify.New(ctx, s.URL, "es", tc.opts); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := vv.Verify(ctx, tc.token); signer.Code(err) != tc.code {
			t.Errorf("%s: %v, want code %s", name, err, tc.code)
		}
	}
	// Algorithms are pinned: a verifier of another algorithm refuses.
	hs, err := verify.New(ctx, s.URL, "es", verify.Options{Algorithm: "HS256", SkipRevocations: true, Now: s.Clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := hs.Verify(ctx, good); signer.Code(err) != signer.CodeAlgorithm {
		t.Errorf("alg pinned: %v", err)
	}
	// The same token, the same answer as keyd's verify endpoint.
	s.Clock.Add(11 * time.Minute)
	if _, err := v.Verify(ctx, good); signer.Code(err) != signer.CodeExpired {
		t.Errorf("expired: %v", err)
	}
	_, body := s.Call("POST", "/v1/keysets/es/verify", apitest.ServiceToken, `{"token":"`+good+`"}`)
	if !strings.Contains(body, `"code":"token_expired"`) {
		t.Errorf("keyd says %s", body)
	}
	if _, err := verify.New(ctx, s.URL, "es", verify.Options{Algorithm: "none"}); err == nil {
		t.Error("alg none accepted")
	}
}

// TestRevocationListRefreshes: a revocation made after the verifier
// started reaches it once the list's max-age (1s here) has passed.
func TestRevocationListRefreshes(t *testing.T) {
	s, ctx := setup(t, time.Second)
	tok := sign(t, s, `{"sub":"carol"}`)
	v, err := verify.New(ctx, s.URL, "es", verify.Options{Algorithm: "ES256", Now: s.Clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(ctx, tok); err != nil {
		t.Fatal(err)
	}
	if code, out := s.Call("POST", "/v1/keysets/es/revocations", apitest.AdminToken, `{"sub":"carol"}`); code != 200 {
		t.Fatalf("revoke: %d %s", code, out)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := v.Verify(ctx, tok)
		if signer.Code(err) == signer.CodeRevoked {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the revocation did not reach the verifier: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestMiddleware(t *testing.T) {
	s, ctx := setup(t, time.Minute)
	v, err := verify.New(ctx, s.URL, "es", verify.Options{Algorithm: "ES256", Now: s.Clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	app := httptest.NewServer(v.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		claims, _ := verify.Claims(r.Context())
		fmt.Fprintf(w, "hello %s", claims["sub"])
	})))
	defer app.Close()
	get := func(token string) (int, string, http.Header) {
		req, _ := http.NewRequest("GET", app.URL, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), resp.Header
	}
	tok := sign(t, s, `{"sub":"alice"}`)
	if code, body, _ := get(tok); code != 200 || body != "hello alice" {
		t.Fatalf("valid: %d %s", code, body)
	}
	if code, body, _ := get(""); code != 401 || !strings.Contains(body, "missing_token") {
		t.Fatalf("no token: %d %s", code, body)
	}
	s.Clock.Add(11 * time.Minute)
	code, body, h := get(tok)
	if code != 401 || !strings.Contains(body, `"code":"token_expired"`) || !strings.Contains(h.Get("WWW-Authenticate"), `error="invalid_token"`) {
		t.Fatalf("expired: %d %s %v", code, body, h)
	}
}

// The verify package follows the legacy rule as keyd does: a token without
// a kid verifies with the named imported key alone, until LegacyUntil.
func TestLegacyTokensLocally(t *testing.T) {
	s, ctx := setup(t, time.Minute)
	old, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.MarshalPKIXPublicKey(&old.PublicKey)
	body, _ := json.Marshal(map[string]any{"pem": string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})), "kid": "old-es"})
	if code, out := s.Call("POST", "/v1/keysets/es/keys/import", apitest.AdminToken, string(body)); code != 200 {
		t.Fatalf("import: %d %s", code, out)
	}
	sig, _ := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: old}, nil) // no kid
	tok, _ := josejwt.Signed(sig).Claims(map[string]any{"sub": "legacy-user", "exp": s.Clock.Now().Add(2 * time.Hour).Unix()}).Serialize()
	opts := verify.Options{Algorithm: "ES256", Now: s.Clock.Now, SkipRevocations: true}
	plain, err := verify.New(ctx, s.URL, "es", opts)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := plain.Verify(ctx, tok); signer.Code(err) != signer.CodeUnknownKey {
		t.Fatalf("without the legacy setting: %v", err)
	}
	opts.LegacyKID, opts.LegacyUntil = "old-es", s.Clock.Now().Add(time.Hour)
	legacy, err := verify.New(ctx, s.URL, "es", opts)
	if err != nil {
		t.Fatal(err)
	}
	if claims, err := legacy.Verify(ctx, tok); err != nil || claims["sub"] != "legacy-user" {
		t.Fatalf("with the legacy setting: %v %v", claims, err)
	}
	s.Clock.Add(time.Hour)
	if _, err := legacy.Verify(ctx, tok); signer.Code(err) != signer.CodeUnknownKey {
		t.Fatalf("after LegacyUntil: %v", err)
	}
}

// New gives up with a clear error when the JWKS cannot be fetched, even
// with a context that has no deadline (it used to wait forever).
func TestNewGivesUp(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	start := time.Now()
	_, err = verify.New(context.Background(), "http://"+addr, "app", verify.Options{Algorithm: "ES256"})
	if err == nil || !strings.Contains(err.Error(), "cannot be fetched") || time.Since(start) > verify.StartTimeout+5*time.Second {
		t.Fatalf("New against nothing: %v after %v", err, time.Since(start))
	}
}

// TestRevocationDeltas: after the whole list at start, each refresh asks
// only for the changes since (?since=), adds them, and a delta whose
// signature does not verify is refused and changes nothing.
func TestRevocationDeltas(t *testing.T) {
	s, ctx := setup(t, time.Minute)
	var tamper atomic.Bool
	var sinces atomic.Int64
	front := rewritingProxy(t, s.URL, func(req *http.Request, body []byte) []byte {
		if req.URL.Query().Get("since") == "" {
			return body
		}
		sinces.Add(1)
		if tamper.Load() { // one character of the payload changed
			parts := strings.Split(string(body), ".")
			p := []byte(parts[1])
			p[len(p)/2] ^= 1
			body = []byte(parts[0] + "." + string(p) + "." + parts[2])
		}
		return body
	})
	first, second := sign(t, s, `{"sub":"dave"}`), sign(t, s, `{"sub":"erin"}`)
	v, err := verify.New(ctx, front.URL, "es", verify.Options{Algorithm: "ES256", Now: s.Clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	revoke := func(tok string) {
		t.Helper()
		if code, out := s.Call("POST", "/v1/keysets/es/revocations", apitest.AdminToken, `{"token":"`+tok+`"}`); code != 200 {
			t.Fatalf("revoke: %d %s", code, out)
		}
		s.Clock.Add(time.Minute) // keyd signs changes in at most every tenth of jwks_max_age
	}
	revoke(first)
	if err := v.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if fetched, deltas := v.Stats(); fetched != 2 || deltas != 1 || sinces.Load() != 1 {
		t.Fatalf("fetched %d lists, %d deltas (%d asked with since)", fetched, deltas, sinces.Load())
	}
	if _, err := v.Verify(ctx, first); signer.Code(err) != signer.CodeRevoked {
		t.Fatalf("revoked through a delta: %v", err)
	}
	tamper.Store(true)
	revoke(second)
	if err := v.Refresh(ctx); err == nil || !strings.Contains(err.Error(), "does not verify") {
		t.Fatalf("a tampered delta: %v", err)
	}
	if _, err := v.Verify(ctx, first); signer.Code(err) != signer.CodeRevoked {
		t.Fatalf("after a tampered delta, the list held: %v", err)
	}
	if _, err := v.Verify(ctx, second); err != nil {
		t.Fatalf("a tampered delta was applied: %v", err)
	}
	tamper.Store(false)
	if err := v.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(ctx, second); signer.Code(err) != signer.CodeRevoked {
		t.Fatalf("the next good delta: %v", err)
	}
}

// A proxy (or a CDN that ignores ?since=) that replays the list captured
// before a revocation, in answer to the next request: the verifier refuses
// the older list, keeps the one it holds, and the revoked token stays
// refused. It used to take the replayed list, making the token valid again.
func TestRevocationListRollbackRefused(t *testing.T) {
	s, ctx := setup(t, time.Minute)
	var captured atomic.Pointer[[]byte]
	var replay atomic.Bool
	front := rewritingProxy(t, s.URL, func(req *http.Request, body []byte) []byte {
		if !strings.HasSuffix(req.URL.Path, "/revocations.jwt") {
			return body
		}
		if captured.Load() == nil {
			captured.Store(&body)
		}
		if replay.Load() {
			return *captured.Load()
		}
		return body
	})
	tok := sign(t, s, `{"sub":"dave"}`)
	s.Clock.Add(time.Minute)
	v, err := verify.New(ctx, front.URL, "es", verify.Options{Algorithm: "ES256", Now: s.Clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	if code, out := s.Call("POST", "/v1/keysets/es/revocations", apitest.AdminToken, `{"token":"`+tok+`"}`); code != 200 {
		t.Fatalf("revoke: %d %s", code, out)
	}
	s.Clock.Add(time.Minute)
	if err := v.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(ctx, tok); signer.Code(err) != signer.CodeRevoked {
		t.Fatalf("revoked: %v", err)
	}
	replay.Store(true)
	s.Clock.Add(time.Minute)
	if err := v.Refresh(ctx); !errors.Is(err, verify.ErrListRollback) {
		t.Fatalf("a replayed older list: %v, want ErrListRollback", err)
	}
	if _, err := v.Verify(ctx, tok); signer.Code(err) != signer.CodeRevoked {
		t.Fatalf("after the replay the revoked token: %v", err)
	}
}

// rewritingProxy stands in front of keyd at target and lets rewrite change
// each answer's body (a tampering or replaying proxy); it closes with t.
func rewritingProxy(t *testing.T, target string, rewrite func(req *http.Request, body []byte) []byte) *httptest.Server {
	u, _ := url.Parse(target)
	proxy := httputil.NewSingleHostReverseProxy(u)
	proxy.ModifyResponse = func(resp *http.Response) error {
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			return err
		}
		body = rewrite(resp.Request, body)
		resp.Body = io.NopCloser(bytes.NewReader(body))
		resp.ContentLength = int64(len(body))
		resp.Header.Set("Content-Length", fmt.Sprint(len(body)))
		return nil
	}
	front := httptest.NewServer(proxy)
	t.Cleanup(front.Close)
	return front
}
