package verify_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

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
