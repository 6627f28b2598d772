package api_test

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	josejwt "github.com/go-jose/go-jose/v4/jwt"

	"github.com/keyd-dev/keyd/internal/api"
	"github.com/keyd-dev/keyd/internal/api/apitest"
	"github.com/keyd-dev/keyd/keystore"
	"github.com/keyd-dev/keyd/signer"
	"github.com/keyd-dev/keyd/tokenstate"
	"github.com/keyd-dev/keyd/tokenstate/records"
)

type signedToken struct {
	Token     string
	ExpiresAt time.Time `json:"expires_at"`
}

func signAt(t *testing.T, s *apitest.Server, keyset, claims string) signedToken {
	t.Helper()
	code, body := s.Call("POST", "/v1/keysets/"+keyset+"/sign", "svc-token", `{"claims":`+claims+`}`)
	if code != 200 {
		t.Fatalf("sign: %d %s", code, body)
	}
	var tok signedToken
	_ = json.Unmarshal([]byte(body), &tok)
	return tok
}

func verifyCode(t *testing.T, s *apitest.Server, keyset, token string) string {
	t.Helper()
	code, body := s.Call("POST", "/v1/keysets/"+keyset+"/verify", "svc-token", `{"token":"`+token+`"}`)
	var out struct {
		Valid bool
		Code  string
	}
	if code != 200 || json.Unmarshal([]byte(body), &out) != nil || out.Valid == (out.Code != "") {
		t.Fatalf("verify: %d %s", code, body)
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
	s := apitest.Serve(t, nil, p, hs)

	byJTI := signAt(t, s, "es", `{"sub":"x"}`)
	byToken := signAt(t, s, "es", `{"sub":"y"}`)
	alice1 := signAt(t, s, "es", `{"sub":"alice"}`)
	keep := signAt(t, s, "es", `{"sub":"bob"}`)

	revoke := func(body string) (int, string) {
		return s.Call("POST", "/v1/keysets/es/revocations", "ops-token", body)
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
	s.Clock.Add(time.Second)
	alice2 := signAt(t, s, "es", `{"sub":"alice"}`) // after the cut-off

	for tok, want := range map[string]string{byJTI.Token: signer.CodeRevoked, byToken.Token: signer.CodeRevoked, alice1.Token: signer.CodeRevoked, keep.Token: "", alice2.Token: ""} {
		if got := verifyCode(t, s, "es", tok); got != want {
			t.Errorf("verify: code %q, want %q", got, want)
		}
	}
	// Revoking a revoked token again changes nothing.
	if code, body := revoke(`{"token":"` + byToken.Token + `"}`); code != 200 || !strings.Contains(body, `"in_force":3`) {
		t.Fatalf("revoking twice: %d %s", code, body)
	}

	// The list, and the refusals.
	code, body := s.Call("GET", "/v1/keysets/es/revocations", "ops-token", "")
	var list api.RevocationView
	if code != 200 || json.Unmarshal([]byte(body), &list) != nil || len(list.Tokens) != 2 || len(list.Subjects) != 1 || list.Subjects[0].Sub != "alice" {
		t.Fatalf("list: %d %s", code, body)
	}
	for _, tc := range []struct{ body, want string }{
		{`{}`, "exactly one"},
		{`{"jti":"a"}`, "go together"},
		{`{"jti":"a","exp":1}`, "expired already"},
		{fmt.Sprintf(`{"jti":"a","exp":%d}`, s.Clock.Now().Add(time.Hour).Unix()), "beyond token_ttl"},
		{`{"token":"forged.token.here"}`, "does not verify"},
		{`{"sub":"a","token":"b"}`, "exactly one"},
		{`{"sub":"a","reason":"` + strings.Repeat("x", 300) + `"}`, "reason"},
	} {
		if code, body := revoke(tc.body); code != 400 || !strings.Contains(body, tc.want) {
			t.Errorf("%.60s: %d %s", tc.body, code, body)
		}
	}
	if code, _ := s.Call("POST", "/v1/keysets/es/revocations", "svc-token", `{"sub":"a"}`); code != 403 {
		t.Errorf("revoking without admin: %d", code)
	}
	// The limit (4) is a clear 409, and nothing is dropped to make room.
	if code, _ := revoke(`{"sub":"fourth"}`); code != 200 {
		t.Fatal("fourth revocation refused")
	}
	if code, body := revoke(`{"sub":"fifth"}`); code != 409 || !strings.Contains(body, "revocation_limit") {
		t.Fatalf("past the limit: %d %s", code, body)
	}
	if got := verifyCode(t, s, "es", byJTI.Token); got != signer.CodeRevoked {
		t.Fatal("a revocation was dropped at the limit")
	}

	// Published list: a JWT signed by the active key, verifiable through
	// the JWKS with an independent library, cacheable like the JWKS.
	resp, err := http.Get(s.URL + "/v1/keysets/es/revocations.jwt")
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Cache-Control") != "public, max-age=60" || resp.Header.Get("ETag") == "" || resp.Header.Get("Content-Type") != "application/jwt" {
		t.Fatalf("revocations.jwt: %d %v", resp.StatusCode, resp.Header)
	}
	_, jwksBody := s.Call("GET", "/v1/keysets/es/jwks.json", "", "")
	var set jose.JSONWebKeySet
	_ = json.Unmarshal([]byte(jwksBody), &set)
	parsed, err := josejwt.ParseSigned(string(raw), []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		t.Fatal(err)
	}
	var claims struct {
		josejwt.Claims
		Format   int                   `json:"v"`
		Tokens   []signer.RevokedBatch `json:"revoked_jti"`
		SubKey   string                `json:"sub_key"`
		Subjects []struct {
			SubHMAC string `json:"sub_hmac"`
			Before  int64  `json:"iat_before"`
		} `json:"revoked_sub"`
	}
	if err := parsed.Claims(set.Key(parsed.Headers[0].KeyID)[0].Key, &claims); err != nil {
		t.Fatalf("go-jose rejects the list: %v", err)
	}
	digests := map[[signer.RevocationDigestSize]byte]int64{}
	if err := signer.RevokedTokens(claims.Tokens, func(d [signer.RevocationDigestSize]byte, exp int64) { digests[d] = exp }); err != nil {
		t.Fatal(err)
	}
	if err := claims.ValidateWithLeeway(josejwt.Expected{AnyAudience: []string{signer.RevocationListAudience}, Time: s.Clock.Now()}, 0); err != nil || claims.Format != 2 || len(digests) != 2 || len(claims.Subjects) != 2 {
		t.Fatalf("list claims: %+v, %v", claims, err)
	}
	// A token is named by its jti's digest, with an exp at or after its own
	// (the end of its batch's minute), never in clear.
	if exp, ok := digests[signer.RevocationDigest(jtiOf(t, byJTI.Token))]; !ok || exp < byJTI.ExpiresAt.Unix() || exp > byJTI.ExpiresAt.Unix()+60 {
		t.Fatalf("the revoked jti in the list: %v %v (token exp %v)", ok, exp, byJTI.ExpiresAt.Unix())
	}
	// The list is public: subjects appear hashed, never in clear.
	payload, _ := base64.RawURLEncoding.DecodeString(strings.Split(string(raw), ".")[1])
	subKey, _ := base64.RawURLEncoding.DecodeString(claims.SubKey)
	plainHash := sha256.Sum256([]byte("alice"))
	if strings.Contains(string(payload), "alice") || strings.Contains(string(payload), jtiOf(t, byJTI.Token)) || len(subKey) != 16 || !strings.Contains(string(payload), signer.SubjectMAC(subKey, "alice")) ||
		strings.Contains(string(payload), base64.RawURLEncoding.EncodeToString(plainHash[:])) {
		t.Fatalf("revoked subjects in the public list: %+v", claims.Subjects)
	}
	// The list is signed by the key set's key but never verifies as a token
	// (the review: an anonymous bearer for verifiers that skip aud).
	if got := verifyCode(t, s, "es", string(raw)); got != signer.CodeType {
		t.Fatalf("the revocation list as a token: %q", got)
	}
	if code, body := s.Call("POST", "/v1/keysets/es/verify", "svc-token", `{"token":"`+string(raw)+`","audience":["`+signer.RevocationListAudience+`"]}`); code != 200 || !strings.Contains(body, `"valid":false`) {
		t.Fatalf("the revocation list with its own audience: %d %s", code, body)
	}
	for _, bad := range []string{"yesterday", "-5", "0", "1e9"} {
		if code, body := s.Call("GET", "/v1/keysets/es/revocations.jwt?since="+bad, "", ""); code != 400 || !strings.Contains(body, "since must be the iat") {
			t.Errorf("since=%s: %d %s", bad, code, body)
		}
	}
	if code, _ := s.Call("GET", "/v1/keysets/hs/revocations.jwt", "", ""); code != 404 {
		t.Errorf("an HMAC key set's list: %d", code)
	}

	// Entries leave once their tokens would have expired anyway.
	s.Clock.Add(11 * time.Minute)
	code, body = s.Call("GET", "/v1/keysets/es/revocations", "ops-token", "")
	if code != 200 || !strings.Contains(body, `"tokens":[]`) || !strings.Contains(body, `"subjects":[]`) {
		t.Fatalf("after expiry: %d %s", code, body)
	}
	if code, _ := revoke(`{"sub":"fifth"}`); code != 200 {
		t.Fatal("expired entries still count against the limit")
	}
	if _, err := s.Manager.PruneRevocations(context.Background()); err != nil {
		t.Fatal(err)
	}
	if all, _ := tokenstate.All(context.Background(), records.New(s.Store)); len(all) != 1 {
		t.Fatalf("the store kept %d entries, want the one in force", len(all))
	}
}

// The review's attack: after "log out everywhere" the subject's refresh
// token used to mint a fresh pair whose new iat passed the cut-off. Now the
// refresh is refused, the subject's later logins work, and one login can
// be ended by its refresh token.
func TestLogoutEverywhereEndsRefreshLogins(t *testing.T) {
	s := apitest.Serve(t, nil, keystore.Policy{Name: "app", Algorithm: keystore.ES256, Rotation: "@daily",
		TokenTTL: 5 * time.Minute, JWKSMaxAge: time.Minute, Leeway: time.Second, RefreshTTL: 24 * time.Hour})
	pair := func(sub string) (access, refresh string) {
		t.Helper()
		code, body := s.Call("POST", "/v1/keysets/app/token-pair", apitest.ServiceToken, `{"claims":{"sub":"`+sub+`"}}`)
		var p struct{ AccessToken, RefreshToken string }
		if code != 200 || json.Unmarshal([]byte(body), &struct {
			A *string `json:"access_token"`
			R *string `json:"refresh_token"`
		}{&p.AccessToken, &p.RefreshToken}) != nil {
			t.Fatalf("token-pair: %d %s", code, body)
		}
		return p.AccessToken, p.RefreshToken
	}
	refreshCode := func(rt string) (int, string) {
		t.Helper()
		code, body := s.Call("POST", "/v1/keysets/app/refresh", apitest.ServiceToken, `{"refresh_token":"`+rt+`"}`)
		var e struct{ Error struct{ Code string } }
		_ = json.Unmarshal([]byte(body), &e)
		return code, e.Error.Code
	}
	access, rt := pair("alice")
	_, bobRT := pair("bob")
	s.Clock.Add(2 * time.Second)
	if code, body := s.Call("POST", "/v1/keysets/app/revocations", apitest.AdminToken, `{"sub":"alice"}`); code != 200 {
		t.Fatalf("revoke subject: %d %s", code, body)
	}
	if c := verifyCode(t, s, "app", access); c != "token_revoked" {
		t.Fatalf("alice's access token: %q", c)
	}
	s.Clock.Add(2 * time.Second)
	if code, c := refreshCode(rt); code != 401 || c != "refresh_token_revoked" {
		t.Fatalf("alice's refresh after log out everywhere: %d %s", code, c)
	}
	// Still refused once the access tokens' revocation has expired.
	s.Clock.Add(time.Hour)
	if code, c := refreshCode(rt); code != 401 || c != "refresh_token_revoked" {
		t.Fatalf("alice's refresh an hour later: %d %s", code, c)
	}
	if code, c := refreshCode(bobRT); code != 200 {
		t.Fatalf("bob's refresh: %d %s", code, c)
	}
	_, rt2 := pair("alice")
	if code, c := refreshCode(rt2); code != 200 {
		t.Fatalf("alice's new login: %d %s", code, c)
	}

	// One login, by its refresh token.
	_, rt3 := pair("carol")
	_, rt4 := pair("carol")
	if code, body := s.Call("POST", "/v1/keysets/app/revocations", apitest.AdminToken, `{"refresh_token":"`+rt3+`"}`); code != 200 ||
		!regexp.MustCompile(`"revoked":\{"logged_in_at":"[^"]+","login":"[^"]+","sub":"carol"\}`).MatchString(body) || strings.Contains(body, rt3) {
		t.Fatalf("revoke login: %d %s", code, body)
	}
	if code, c := refreshCode(rt3); code != 401 || c != "refresh_token_revoked" {
		t.Fatalf("revoked login: %d %s", code, c)
	}
	if code, c := refreshCode(rt4); code != 200 {
		t.Fatalf("carol's other login: %d %s", code, c)
	}
	for body, want := range map[string]string{
		`{"refresh_token":"krt_nope"}`:              "invalid_token",
		`{"refresh_token":"` + rt4 + `","sub":"x"}`: "bad_request",
	} {
		code, out := s.Call("POST", "/v1/keysets/app/revocations", apitest.AdminToken, body)
		if code != 400 || !strings.Contains(out, want) {
			t.Errorf("%s: %d %s", body, code, out)
		}
	}
	if code, _ := s.Call("POST", "/v1/keysets/app/revocations", apitest.ServiceToken, `{"refresh_token":"`+rt4+`"}`); code != 403 {
		t.Errorf("a sign-scoped caller revoked a login: %d", code)
	}
}

// The listing shows the newest entries up to limit, and how many are in
// force.
func TestRevocationListingLimit(t *testing.T) {
	s := apitest.Serve(t, nil, keystore.Policy{Name: "es", Algorithm: keystore.ES256, Rotation: "@daily", TokenTTL: 10 * time.Minute, JWKSMaxAge: time.Minute})
	for i := range 3 {
		s.Clock.Add(time.Second)
		body := fmt.Sprintf(`{"jti":"j%d","exp":%d}`, i, s.Clock.Now().Add(5*time.Minute).Unix())
		if code, out := s.Call("POST", "/v1/keysets/es/revocations", apitest.AdminToken, body); code != 200 {
			t.Fatalf("revoke: %d %s", code, out)
		}
	}
	code, body := s.Call("GET", "/v1/keysets/es/revocations?limit=2", apitest.AdminToken, "")
	var v struct {
		Tokens    []struct{ JTI string }
		InForce   int  `json:"in_force"`
		Truncated bool `json:"truncated"`
	}
	if code != 200 || json.Unmarshal([]byte(body), &v) != nil || !v.Truncated || v.InForce != 3 || len(v.Tokens) != 2 || v.Tokens[0].JTI != "j2" {
		t.Fatalf("limit=2: %d %s", code, body)
	}
	if code, _ := s.Call("GET", "/v1/keysets/es/revocations?limit=0", apitest.AdminToken, ""); code != 400 {
		t.Fatalf("limit=0: %d", code)
	}
}
