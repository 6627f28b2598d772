package signer_test

import (
	"crypto"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"runtime"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	josejwt "github.com/go-jose/go-jose/v4/jwt"

	"github.com/keyd-dev/keyd/keystore"
	"github.com/keyd-dev/keyd/keystore/keystoretest"
	"github.com/keyd-dev/keyd/signer"
	"github.com/keyd-dev/keyd/tokenstate"
)

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func setup(t testing.TB, alg keystore.Algorithm) (*signer.Signer, *clock, *keystore.KeySet, keystore.Policy) {
	t.Helper()
	c := &clock{t: time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)}
	s := signer.New(c.now, nil)
	ks := keystoretest.KeySet(t, "s", alg)
	ks.Version = 1
	p := keystore.Policy{Name: "s", Algorithm: alg, TokenTTL: 15 * time.Minute, JWKSMaxAge: 5 * time.Minute, Leeway: time.Minute, Issuer: "https://keyd.test"}
	if err := s.Load(p, ks); err != nil {
		t.Fatal(err)
	}
	return s, c, ks, p
}

// verificationKey is what an outside verifier holds: the public key, or the
// HMAC secret.
func verificationKey(t *testing.T, k keystore.Key) any {
	t.Helper()
	priv, err := k.PrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	if s, ok := priv.(crypto.Signer); ok {
		return s.Public()
	}
	return priv
}

func TestSignEveryAlgorithmVerifiesWithGoJose(t *testing.T) {
	for _, alg := range keystore.Algorithms {
		t.Run(string(alg), func(t *testing.T) {
			s, c, ks, _ := setup(t, alg)
			tok, err := s.Sign("s", claimsOf(map[string]any{"sub": "alice", "n": json.Number("42")}), 5*time.Minute)
			if err != nil {
				t.Fatal(err)
			}
			active, _ := ks.Active()
			if tok.KID != active.ID || tok.Alg != string(alg) || !tok.ExpiresAt.Equal(c.t.Add(5*time.Minute)) {
				t.Fatalf("token meta = %+v", tok)
			}
			parsed, err := josejwt.ParseSigned(tok.Token, []jose.SignatureAlgorithm{jose.SignatureAlgorithm(alg)})
			if err != nil {
				t.Fatal(err)
			}
			h := parsed.Headers[0]
			if h.KeyID != active.ID || h.Algorithm != string(alg) || h.ExtraHeaders["typ"] != "JWT" {
				t.Fatalf("header = %+v", h)
			}
			var claims josejwt.Claims
			var extra map[string]any
			if err := parsed.Claims(verificationKey(t, active), &claims, &extra); err != nil {
				t.Fatalf("go-jose rejects the token: %v", err)
			}
			if err := claims.ValidateWithLeeway(josejwt.Expected{Issuer: "https://keyd.test", Time: c.t}, 0); err != nil {
				t.Fatal(err)
			}
			if claims.Subject != "alice" || claims.ID == "" || extra["n"] != float64(42) ||
				claims.IssuedAt.Time().Unix() != c.t.Unix() || claims.Expiry.Time().Unix() != c.t.Add(5*time.Minute).Unix() {
				t.Fatalf("claims = %+v %v", claims, extra)
			}
			v, err := s.Verify("s", tok.Token, signer.Expect{})
			if err != nil || v.KID != active.ID || v.Claims["sub"] != "alice" {
				t.Fatalf("Verify = %+v, %v", v, err)
			}
		})
	}
}

func TestTTLRules(t *testing.T) {
	s, c, _, _ := setup(t, keystore.ES256)
	now := c.t.Unix()
	cases := []struct {
		name   string
		claims signer.Claims
		ttl    time.Duration
		ok     bool
		exp    int64
	}{
		{"default is token_ttl", nil, 0, true, now + 900},
		{"shorter ttl", nil, time.Minute, true, now + 60},
		{"ttl over the limit", nil, 16 * time.Minute, false, 0},
		{"negative ttl", nil, -time.Second, false, 0},
		{"exp within the limit", claimsOf(map[string]any{"exp": json.Number(itoa(now + 120))}), 0, true, now + 120},
		{"exp beyond the limit", claimsOf(map[string]any{"exp": json.Number(itoa(now + 901))}), 0, false, 0},
		{"exp in the past", claimsOf(map[string]any{"exp": json.Number(itoa(now - 1))}), 0, false, 0},
		{"exp not a number", claimsOf(map[string]any{"exp": "tomorrow"}), 0, false, 0},
		{"exp and ttl", claimsOf(map[string]any{"exp": json.Number(itoa(now + 60))}), time.Minute, false, 0},
		{"nbf not a number", claimsOf(map[string]any{"nbf": "soon"}), 0, false, 0},
	}
	for _, tc := range cases {
		tok, err := s.Sign("s", tc.claims, tc.ttl)
		if !tc.ok {
			if !errors.Is(err, signer.ErrInvalidRequest) {
				t.Errorf("%s: err = %v, want ErrInvalidRequest", tc.name, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if tok.ExpiresAt.Unix() != tc.exp {
			t.Errorf("%s: exp %d, want %d", tc.name, tok.ExpiresAt.Unix(), tc.exp)
		}
	}
}

func itoa(n int64) string { b, _ := json.Marshal(n); return string(b) }

func TestGivenClaimsWin(t *testing.T) {
	s, c, _, _ := setup(t, keystore.HS256)
	tok, err := s.Sign("s", claimsOf(map[string]any{"jti": "mine", "iss": "other", "iat": 1}), 0)
	if err != nil {
		t.Fatal(err)
	}
	v, err := s.Verify("s", tok.Token, signer.Expect{})
	if err != nil {
		t.Fatal(err)
	}
	if v.Claims["jti"] != "mine" || v.Claims["iss"] != "other" || v.Claims["iat"] != json.Number(itoa(c.t.Unix())) {
		t.Fatalf("claims = %v", v.Claims)
	}
	a, _ := s.Sign("s", nil, 0)
	b, _ := s.Sign("s", nil, 0)
	va, _ := s.Verify("s", a.Token, signer.Expect{})
	vb, _ := s.Verify("s", b.Token, signer.Expect{})
	if va.Claims["jti"] == vb.Claims["jti"] || va.Claims["iss"] != "https://keyd.test" {
		t.Fatalf("jti not random or iss missing: %v %v", va.Claims, vb.Claims)
	}
}

func TestVerifyRejects(t *testing.T) {
	s, c, ks, p := setup(t, keystore.ES256)
	good, err := s.Sign("s", claimsOf(map[string]any{"sub": "x"}), time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(good.Token, ".")
	noneHeader := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","kid":"` + good.KID + `"}`))
	hsHeader := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"HS256","kid":"` + good.KID + `"}`))
	tampered := base64.RawURLEncoding.EncodeToString([]byte(`{"sub":"admin","exp":9999999999}`))

	expect := func(name, token, reason string) {
		t.Helper()
		_, err := s.Verify("s", token, signer.Expect{})
		if !errors.Is(err, signer.ErrInvalidToken) || !strings.Contains(err.Error(), reason) {
			t.Errorf("%s: err = %v, want ErrInvalidToken mentioning %q", name, err, reason)
		}
	}
	expect("garbage", "not.a.token", "malformed")
	expect("alg none", noneHeader+"."+parts[1]+".", "algorithm")
	expect("alg swap", hsHeader+"."+parts[1]+"."+parts[2], "algorithm")
	expect("tampered payload", parts[0]+"."+tampered+"."+parts[2], "signature")

	other, _, _, _ := setup(t, keystore.ES256)
	foreign, _ := other.Sign("s", nil, time.Minute)
	expect("another key set's key", foreign.Token, "unknown")

	c.t = c.t.Add(time.Minute + p.Leeway - time.Second) // a second before exp + leeway: still fine
	if _, err := s.Verify("s", good.Token, signer.Expect{}); err != nil {
		t.Errorf("token rejected within leeway: %v", err)
	}
	c.t = c.t.Add(time.Second)
	expect("expired past leeway", good.Token, "expired")

	c.t = c.t.Add(-time.Hour)
	future, _ := s.Sign("s", claimsOf(map[string]any{"nbf": json.Number(itoa(c.t.Add(10 * time.Minute).Unix()))}), 0)
	expect("nbf in the future", future.Token, "nbf")

	// Revoking the signing key makes its tokens fail at once.
	c.t = c.t.Add(time.Hour - 2*time.Minute)
	fresh, _ := s.Sign("s", nil, time.Minute)
	active, _ := ks.Active()
	revoked, _, err := keystore.Revoke(ks, active.ID, keystoretest.NewKey(t, keystore.ES256), c.t)
	if err != nil {
		t.Fatal(err)
	}
	revoked.Version = 2
	if err := s.Load(p, revoked); err != nil {
		t.Fatal(err)
	}
	expect("revoked key", fresh.Token, "revoked")

	if _, err := s.Verify("nope", good.Token, signer.Expect{}); !errors.Is(err, signer.ErrUnknownKeySet) {
		t.Errorf("unknown key set: %v", err)
	}
	if _, err := s.Sign("nope", nil, 0); !errors.Is(err, signer.ErrUnknownKeySet) {
		t.Errorf("unknown key set: %v", err)
	}
}

func TestRotationKeepsOldTokensValid(t *testing.T) {
	s, c, ks, p := setup(t, keystore.RS256)
	before, _ := s.Sign("s", nil, 0)
	pending, _ := ks.Pending()
	rotated, err := keystore.Rotate(ks, keystoretest.NewKey(t, keystore.RS256), c.t)
	if err != nil {
		t.Fatal(err)
	}
	rotated.Version = 2
	if err := s.Load(p, rotated); err != nil {
		t.Fatal(err)
	}
	after, _ := s.Sign("s", nil, 0)
	if after.KID != pending.ID {
		t.Fatalf("after rotation signs with %s, want the old pending key %s", after.KID, pending.ID)
	}
	if _, err := s.Verify("s", before.Token, signer.Expect{}); err != nil {
		t.Fatalf("token of the retired key rejected: %v", err)
	}
	// An older version arriving late does not roll the signer back.
	if err := s.Load(p, ks); err != nil {
		t.Fatal(err)
	}
	if again, _ := s.Sign("s", nil, 0); again.KID != pending.ID {
		t.Fatalf("stale Load rolled back to %s", again.KID)
	}
}

// claimsOf encodes each value as the sign endpoint would receive it.
func claimsOf(m map[string]any) signer.Claims {
	out := signer.Claims{}
	for k, v := range m {
		raw, err := json.Marshal(v)
		if err != nil {
			panic(err)
		}
		out[k] = raw
	}
	return out
}

func TestClaimsAreSignedExactly(t *testing.T) {
	s, c, _, _ := setup(t, keystore.EdDSA)
	given := signer.Claims{
		"big":    json.RawMessage(`123456789012345678901234567890`),
		"frac":   json.RawMessage(`0.1000`),
		"nested": json.RawMessage(`{ "b": [1, 2, {"c": null}], "a": "x" }`),
		"ünï":    json.RawMessage(`"\u00e9\"quoted\""`),
		"iat":    json.RawMessage(`1`),
	}
	before := maps.Clone(given)
	tok, err := s.Sign("s", given, 0)
	if err != nil {
		t.Fatal(err)
	}
	if !maps.EqualFunc(given, before, func(a, b json.RawMessage) bool { return string(a) == string(b) }) {
		t.Fatalf("Sign modified the caller's claims: %v", given)
	}
	payload, err := base64.RawURLEncoding.DecodeString(strings.Split(tok.Token, ".")[1])
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"big":123456789012345678901234567890`, `"frac":0.1000`, `"nested":{"b":[1,2,{"c":null}],"a":"x"}`} {
		if !strings.Contains(string(payload), want) {
			t.Errorf("payload %s lacks %s", payload, want)
		}
	}
	if strings.Count(string(payload), `"iat"`) != 1 {
		t.Errorf("payload %s: iat must appear once", payload)
	}
	var decoded map[string]any
	if err := json.Unmarshal(payload, &decoded); err != nil {
		t.Fatalf("payload is not JSON: %v", err)
	}
	if decoded["ünï"] != `é"quoted"` || decoded["iat"] != float64(c.t.Unix()) || decoded["jti"] != tok.JTI || tok.JTI == "" {
		t.Fatalf("payload = %v, jti %q", decoded, tok.JTI)
	}
	if _, err := s.Sign("s", signer.Claims{"x": json.RawMessage(`{bad`)}, 0); !errors.Is(err, signer.ErrInvalidRequest) {
		t.Fatalf("invalid raw claim: %v", err)
	}
}

// TestECDSASignaturesAreFixedSize signs enough tokens that some R or S
// values have leading zero bytes (1 in 128 per token), which the JWS form
// must keep as padding; go-jose rejects any other length.
func TestECDSASignaturesAreFixedSize(t *testing.T) {
	for _, alg := range []keystore.Algorithm{keystore.ES256, keystore.ES512} {
		s, _, ks, _ := setup(t, alg)
		active, _ := ks.Active()
		key := verificationKey(t, active)
		for range 400 {
			tok, err := s.Sign("s", nil, 0)
			if err != nil {
				t.Fatal(err)
			}
			sig, _ := base64.RawURLEncoding.DecodeString(strings.Split(tok.Token, ".")[2])
			if want := map[keystore.Algorithm]int{keystore.ES256: 64, keystore.ES512: 132}[alg]; len(sig) != want {
				t.Fatalf("%s signature is %d bytes, want %d", alg, len(sig), want)
			}
			parsed, err := josejwt.ParseSigned(tok.Token, []jose.SignatureAlgorithm{jose.SignatureAlgorithm(alg)})
			if err != nil {
				t.Fatal(err)
			}
			if err := parsed.Claims(key, &josejwt.Claims{}); err != nil {
				t.Fatalf("go-jose rejects %s token: %v", alg, err)
			}
		}
	}
}

// TestSignAllocations bounds the allocations of one token, so that a change
// that makes the hot path allocate more fails here. The bounds are today's
// counts: claims encoding, the token buffer, the signature and jti.
func TestSignAllocations(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are meaningless under the race detector")
	}
	claims := claimsOf(map[string]any{"sub": "alice", "aud": "billing"})
	for alg, max := range map[keystore.Algorithm]float64{keystore.HS256: 15, keystore.EdDSA: 15} {
		s, _, _, _ := setup(t, alg)
		got := testing.AllocsPerRun(200, func() {
			if _, err := s.Sign("s", claims, 0); err != nil {
				t.Fatal(err)
			}
		})
		if got > max {
			t.Errorf("%s: %v allocations per token, want at most %v", alg, got, max)
		}
	}
}

func TestRevokedTokensAreRejectedFromMemory(t *testing.T) {
	s, c, ks, p := setup(t, keystore.EdDSA)
	alice1, _ := s.Sign("s", claimsOf(map[string]any{"sub": "alice"}), 0)
	bob, _ := s.Sign("s", claimsOf(map[string]any{"sub": "bob"}), 0)
	other, _ := s.Sign("s", claimsOf(map[string]any{"sub": "carol"}), 0)
	c.t = c.t.Add(time.Second)
	for _, r := range []tokenstate.Revocation{
		{KeySet: "s", JTI: other.JTI, Expires: c.t.Add(time.Hour)},
		{KeySet: "s", Subject: "alice", Before: c.t.Add(-time.Second), Expires: c.t.Add(time.Hour)},
	} {
		if err := s.Revocations().Add(r, 0); err != nil {
			t.Fatal(err)
		}
	}
	// A new version of the key set keeps them: they are not the key set's.
	ks.Version = 2
	if err := s.Load(p, ks); err != nil {
		t.Fatal(err)
	}
	c.t = c.t.Add(time.Second)
	alice2, _ := s.Sign("s", claimsOf(map[string]any{"sub": "alice"}), 0) // signed after the cut-off
	for tok, code := range map[string]string{alice1.Token: signer.CodeRevoked, other.Token: signer.CodeRevoked, bob.Token: "", alice2.Token: ""} {
		_, err := s.Verify("s", tok, signer.Expect{})
		if signer.Code(err) != code {
			t.Errorf("token of %s: err %v, want code %q", tok[len(tok)-8:], err, code)
		}
	}
}

// BenchmarkVerifyRevocations shows that verification does not slow down
// with the number of revocations in force (a map lookup per token).
// BenchmarkVerifyRevocations: verification with 0 to 1,000,000
// revocations in force (a tenth of them subjects) costs the same: two
// lookups in the sharded index. The token verified is not revoked (the
// common case) but its subject has a neighbour in every shard.
func BenchmarkVerifyRevocations(b *testing.B) {
	for _, n := range []int{0, 10_000, 1_000_000} {
		b.Run(fmt.Sprintf("ES256/revoked=%d", n), func(b *testing.B) {
			s, c, _, _ := setup(b, keystore.ES256)
			tok, _ := s.Sign("s", claimsOf(map[string]any{"sub": "alice"}), 0)
			x := s.Revocations()
			for i := range n {
				r := tokenstate.Revocation{KeySet: "s", JTI: fmt.Sprint("jti-", i), Expires: c.t.Add(time.Hour)}
				if i%10 == 0 {
					r = tokenstate.Revocation{KeySet: "s", Subject: fmt.Sprint("sub-", i), Before: c.t, Expires: c.t.Add(time.Hour)}
				}
				if err := x.Add(r, 0); err != nil {
					b.Fatal(err)
				}
			}
			runtime.GC() // the setup's garbage is not the loop's to collect
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				if _, err := s.Verify("s", tok.Token, signer.Expect{}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// Claims to sign with a registered name in another case, invalid UTF-8 or
// an oversized jti are refused: verifiers would read other members than
// keyd checked, or store what nobody bounded.
func TestSignRefusesAmbiguousClaims(t *testing.T) {
	s, _, _, _ := setup(t, keystore.ES256)
	for name, claims := range map[string]signer.Claims{
		"EXP":          {"EXP": json.RawMessage(`9999999999`)},
		"Sub":          {"Sub": json.RawMessage(`"root"`)},
		"invalid utf8": {"name": json.RawMessage("\"\xff\"")},
		"nested twice": {"act": json.RawMessage(`{"sub":"a","sub":"b"}`)},
		"long jti":     {"jti": json.RawMessage(`"` + strings.Repeat("j", 300) + `"`)},
	} {
		if _, err := s.Sign("s", claims, time.Minute); !errors.Is(err, signer.ErrInvalidRequest) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := s.Sign("s", signer.Claims{"sub": json.RawMessage(`"a"`), "Subject": json.RawMessage(`"b"`), "jti": json.RawMessage(`"j"`)}, time.Minute); err != nil {
		t.Errorf("plain claims refused: %v", err)
	}
}

// Tokens without a kid (PyJWT's default) verify with the legacy key, and
// only it, only until legacy.until; a token that carries a kid never falls
// back to it; allow_missing_exp accepts such tokens without exp.
func TestLegacyTokensWithoutKID(t *testing.T) {
	s, c, ks, p := setup(t, keystore.HS256)
	secret := []byte("the-old-flask-SECRET_KEY-of-42-bytes-long!")
	out, _, err := keystore.Import(ks, []keystore.Key{{ID: "flask", Algorithm: keystore.HS256, Material: secret}}, keystore.StateRetired, c.t)
	if err != nil {
		t.Fatal(err)
	}
	out.Version = 2
	p.Legacy = keystore.LegacyPolicy{KID: "flask", Until: c.t.Add(time.Hour), AllowMissingExp: true}
	if err := s.Load(p, out); err != nil {
		t.Fatal(err)
	}
	now := c.t.Unix()
	withExp := forgeKID(t, secret, "", map[string]any{"sub": "alice", "exp": now + 600})
	noExp := forgeKID(t, secret, "", map[string]any{"sub": "bob"})
	otherKID := forgeKID(t, secret, "not-flask", map[string]any{"sub": "eve", "exp": now + 600})
	for name, tok := range map[string]string{"with exp": withExp, "without exp": noExp} {
		v, err := s.Verify("s", tok, signer.Expect{})
		if err != nil || !v.Legacy || v.KID != "flask" {
			t.Errorf("%s: %+v %v", name, v, err)
		}
	}
	if _, err := s.Verify("s", otherKID, signer.Expect{}); signer.Code(err) != signer.CodeUnknownKey {
		t.Errorf("a token with another kid fell back to the legacy key: %v", err)
	}
	if !s.LegacySeen("s").Equal(c.t) {
		t.Errorf("LegacySeen = %v", s.LegacySeen("s"))
	}
	// A token of keyd's own key without a kid is not accepted either: the
	// legacy key alone is tried.
	active, _ := ks.Active()
	ownSecret, _ := active.PrivateKey()
	if _, err := s.Verify("s", forgeKID(t, ownSecret.([]byte), "", map[string]any{"exp": now + 600}), signer.Expect{}); signer.Code(err) != signer.CodeSignature {
		t.Errorf("keyd's own key without a kid: %v", err)
	}
	// Without allow_missing_exp, exp is required again.
	p.Legacy.AllowMissingExp = false
	out.Version = 3
	_ = s.Load(p, out)
	if _, err := s.Verify("s", noExp, signer.Expect{}); signer.Code(err) != signer.CodeMissingClaim {
		t.Errorf("no exp without allow_missing_exp: %v", err)
	}
	// Past legacy.until: refused.
	c.t = c.t.Add(time.Hour)
	if _, err := s.Verify("s", withExp, signer.Expect{}); signer.Code(err) != signer.CodeUnknownKey {
		t.Errorf("after legacy.until: %v", err)
	}
}
