package signer_test

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"testing"

	jose "github.com/go-jose/go-jose/v4"
	josejwt "github.com/go-jose/go-jose/v4/jwt"

	"github.com/keyd-dev/keyd/keystore"
	"github.com/keyd-dev/keyd/signer"
)

// TestVerifyCodes gives the verifier one token per failure, with a
// controlled clock, and checks the code of each.
func TestVerifyCodes(t *testing.T) {
	s, c, ks, _ := setup(t, keystore.HS256)
	active, _ := ks.Active()
	secret := []byte(active.Material)
	now := c.t.Unix()
	// forge signs claims with the real secret and the given header fields.
	forge := func(claims map[string]any, typ string) string {
		opts := (&jose.SignerOptions{}).WithHeader("kid", active.ID)
		if typ != "" {
			opts = opts.WithType(jose.ContentType(typ))
		}
		sig, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.HS256, Key: secret}, opts)
		if err != nil {
			t.Fatal(err)
		}
		tok, err := josejwt.Signed(sig).Claims(claims).Serialize()
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	base := func(extra map[string]any) map[string]any {
		return amend(map[string]any{"exp": now + 60, "iat": now, "sub": "alice", "iss": "https://keyd.test", "aud": []string{"billing", "ledger"}}, extra)
	}
	good := forge(base(nil), "at+jwt")
	full := signer.Expect{Audience: []string{"ledger", "other"}, Issuer: "https://keyd.test", Subject: "alice", Type: "AT+JWT", RequiredClaims: []string{"sub"}}
	if v, err := s.Verify("s", good, full); err != nil || v.Claims["sub"] != "alice" {
		t.Fatalf("good token: %v", err)
	}
	parts := strings.Split(good, ".")
	for _, tc := range []struct {
		name  string
		token string
		want  signer.Expect
		code  string
	}{
		{"two dots missing", "abc", full, signer.CodeMalformed},
		{"JSON serialization", `{"payload":"e30","signatures":[]}`, full, signer.CodeMalformed},
		{"claims not an object", forgeRaw(t, secret, active.ID, `[1,2]`), full, signer.CodeMalformed},
		// The review's findings: members every reader must agree on.
		{"exp twice", forgeRaw(t, secret, active.ID, fmt.Sprintf(`{"exp":%d,"exp":%d}`, now-3600, now+60)), signer.Expect{}, signer.CodeMalformed},
		{"EXP beside exp", forgeRaw(t, secret, active.ID, fmt.Sprintf(`{"exp":%d,"EXP":%d}`, now+60, now+60)), signer.Expect{}, signer.CodeMalformed},
		{"invalid UTF-8", forgeRaw(t, secret, active.ID, fmt.Sprintf("{\"exp\":%d,\"sub\":\"\xff\"}", now+60)), signer.Expect{}, signer.CodeMalformed},
		{"JSON serialization of a valid token", jsonSerialized(parts), full, signer.CodeMalformed},
		{"claims null", forgeRaw(t, secret, active.ID, `null`), signer.Expect{}, signer.CodeMalformed},
		{"exp twice, once escaped", forgeRaw(t, secret, active.ID, fmt.Sprintf(`{"exp":%d,"e\u0078p":%d}`, now-3600, now+60)), signer.Expect{}, signer.CodeMalformed},
		{"a member twice deeper down", forgeRaw(t, secret, active.ID, fmt.Sprintf(`{"exp":%d,"act":{"sub":"a","sub":"b"}}`, now+60)), signer.Expect{}, signer.CodeMalformed},
		{"a second object after the claims", forgeRaw(t, secret, active.ID, fmt.Sprintf(`{"exp":%d}{}`, now+60)), signer.Expect{}, signer.CodeMalformed},
		// The header is read as strictly: which alg a verifier sees must
		// not depend on how it breaks ties.
		{"alg twice", forgeHeader(secret, `{"alg":"none","alg":"HS256","kid":"`+active.ID+`"}`, parts[1]), full, signer.CodeMalformed},
		{"kid twice", forgeHeader(secret, `{"alg":"HS256","kid":"x","kid":"`+active.ID+`"}`, parts[1]), full, signer.CodeMalformed},
		{"header null", forgeHeader(secret, `null`, parts[1]), full, signer.CodeMalformed},
		{"header a string", forgeHeader(secret, `"HS256"`, parts[1]), full, signer.CodeMalformed},
		{"ALG for alg", forgeHeader(secret, `{"ALG":"HS256","kid":"`+active.ID+`"}`, parts[1]), full, signer.CodeAlgorithm},
		{"crit", forgeHeader(secret, `{"alg":"HS256","kid":"`+active.ID+`","crit":["exp"],"exp":1}`, parts[1]), full, signer.CodeSignature},
		{"b64 false", forgeHeader(secret, `{"alg":"HS256","kid":"`+active.ID+`","b64":false}`, parts[1]), full, signer.CodeSignature},
		{"signature spelt another way", parts[0] + "." + parts[1] + "." + respell(parts[2]), full, signer.CodeSignature},
		{"huge kid", forgeKID(t, secret, strings.Repeat("k", 700000), base(nil)), full, signer.CodeUnknownKey},
		{"exp a string", forge(base(map[string]any{"exp": "soon"}), ""), signer.Expect{}, signer.CodeMalformed},
		{"alg none", base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none"}`)) + "." + parts[1] + ".", full, signer.CodeAlgorithm},
		{"unknown kid", forgeKID(t, secret, "nope", base(nil)), full, signer.CodeUnknownKey},
		{"bad signature", parts[0] + "." + parts[1] + "." + parts[2][:10] + "AAAA" + parts[2][14:], full, signer.CodeSignature},
		{"no exp", forge(base(map[string]any{"exp": nil}), ""), signer.Expect{}, signer.CodeMissingClaim},
		{"required claim", forge(base(map[string]any{"sub": nil}), ""), signer.Expect{RequiredClaims: []string{"sub"}}, signer.CodeMissingClaim},
		{"expired beyond leeway", forge(base(map[string]any{"exp": now - 61}), ""), signer.Expect{}, signer.CodeExpired},
		{"nbf beyond leeway", forge(base(map[string]any{"nbf": now + 61}), ""), signer.Expect{}, signer.CodeNotYetValid},
		{"iat beyond leeway", forge(base(map[string]any{"iat": now + 61}), ""), signer.Expect{}, signer.CodeIssuedInFuture},
		{"issuer", good, signer.Expect{Issuer: "https://other"}, signer.CodeIssuer},
		{"audience", good, signer.Expect{Audience: []string{"other"}}, signer.CodeAudience},
		{"audience not strings", forge(base(map[string]any{"aud": []int{1}}), ""), signer.Expect{Audience: []string{"billing"}}, signer.CodeAudience},
		{"subject", good, signer.Expect{Subject: "bob"}, signer.CodeSubject},
		{"type", good, signer.Expect{Type: "JWT"}, signer.CodeType},
		// Order: a forged token is a bad signature whatever its claims.
		{"forged and expired", parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte(`{"exp":1}`)) + "." + parts[2], full, signer.CodeSignature},
		// Order: expiry is reported before audience.
		{"expired and wrong audience", forge(base(map[string]any{"exp": now - 3600, "aud": "x"}), ""), full, signer.CodeExpired},
	} {
		_, err := s.Verify("s", tc.token, tc.want)
		if !errors.Is(err, signer.ErrInvalidToken) || signer.Code(err) != tc.code {
			t.Errorf("%s: err = %v (code %q), want code %q", tc.name, err, signer.Code(err), tc.code)
		}
	}
	// A 700,000-byte kid comes back clipped, in the error and its KID.
	_, err := s.Verify("s", forgeKID(t, secret, strings.Repeat("k", 700000), base(nil)), full)
	if len(err.Error()) > 200 || len(signer.KeyID(err)) > 100 {
		t.Errorf("huge kid answered whole: %d bytes of error, %d of kid", len(err.Error()), len(signer.KeyID(err)))
	}
	// Within the leeway (60s) each time claim passes.
	if _, err := s.Verify("s", forge(base(map[string]any{"exp": now - 59, "nbf": now + 59, "iat": now + 59}), ""), signer.Expect{}); err != nil {
		t.Errorf("within leeway: %v", err)
	}
}

func forgeKID(t *testing.T, secret []byte, kid string, claims map[string]any) string {
	t.Helper()
	opts := &jose.SignerOptions{}
	if kid != "" {
		opts = opts.WithHeader("kid", kid)
	}
	sig, _ := jose.NewSigner(jose.SigningKey{Algorithm: jose.HS256, Key: secret}, opts)
	tok, err := josejwt.Signed(sig).Claims(claims).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// forgeHeader MACs a token of the given header (JSON) and encoded payload
// with secret.
func forgeHeader(secret []byte, header, payload string) string {
	input := base64.RawURLEncoding.EncodeToString([]byte(header)) + "." + payload
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(input))
	return input + "." + base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// respell writes a base64url segment another way that decodes to the
// same bytes (a low bit of its last character set, which decoders that are
// not strict ignore).
func respell(seg string) string {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	last := strings.IndexByte(alphabet, seg[len(seg)-1])
	return seg[:len(seg)-1] + string(alphabet[last|1])
}

func forgeRaw(t *testing.T, secret []byte, kid, payload string) string {
	t.Helper()
	sig, _ := jose.NewSigner(jose.SigningKey{Algorithm: jose.HS256, Key: secret}, (&jose.SignerOptions{}).WithHeader("kid", kid))
	obj, err := sig.Sign([]byte(payload))
	if err != nil {
		t.Fatal(err)
	}
	tok, _ := obj.CompactSerialize()
	return tok
}

// jsonSerialized is a compact token's JWS JSON serialization with an
// unprotected header holding dots, which jws.Parse accepts.
func jsonSerialized(parts []string) string {
	return fmt.Sprintf(`{"payload":%q,"signatures":[{"protected":%q,"header":{"x":"a.b.c"},"signature":%q}]}`, parts[1], parts[0], parts[2])
}

// amend sets the claims of extra in m, and deletes those extra sets to nil.
func amend(m, extra map[string]any) map[string]any {
	for k, v := range extra {
		if v == nil {
			delete(m, k)
		} else {
			m[k] = v
		}
	}
	return m
}
