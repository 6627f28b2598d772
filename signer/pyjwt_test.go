package signer_test

import (
	"crypto"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	josejwt "github.com/go-jose/go-jose/v4/jwt"

	"github.com/keyd-dev/keyd/keystore"
	"github.com/keyd-dev/keyd/keystore/keystoretest"
	"github.com/keyd-dev/keyd/signer"
)

// pyjwtException is the README's mapping from keyd's verification codes to
// the exception PyJWT raises for the same token. Codes PyJWT has no
// counterpart for here (unknown_key needs PyJWKClient; invalid_subject
// needs PyJWT 2.10, Debian has 2.6; typ and revocation are not PyJWT's)
// are left out.
var pyjwtException = map[string]string{
	"":                        "valid",
	signer.CodeMalformed:      "DecodeError",
	signer.CodeAlgorithm:      "InvalidAlgorithmError",
	signer.CodeSignature:      "InvalidSignatureError",
	signer.CodeMissingClaim:   "MissingRequiredClaimError",
	signer.CodeExpired:        "ExpiredSignatureError",
	signer.CodeNotYetValid:    "ImmatureSignatureError",
	signer.CodeIssuedInFuture: "ImmatureSignatureError",
	signer.CodeIssuer:         "InvalidIssuerError",
	signer.CodeAudience:       "InvalidAudienceError",
}

// TestPyJWTMapping gives the same tokens to keyd's verifier and to PyJWT
// and checks that each keyd code comes with the documented exception.
func TestPyJWTMapping(t *testing.T) {
	const python = "/usr/bin/python3"
	if err := exec.Command(python, "-c", "import jwt, cryptography").Run(); err != nil {
		if os.Getenv("KEYD_REQUIRE_PYJWT") != "" {
			t.Fatalf("PyJWT is required (apt-get install python3-jwt python3-cryptography): %v", err)
		}
		t.Skip("no PyJWT for /usr/bin/python3")
	}
	now := time.Now()
	s := signer.New(func() time.Time { return now }, nil)
	ks := keystoretest.KeySet(t, "s", keystore.ES256)
	ks.Version = 1
	p := keystore.Policy{Name: "s", Algorithm: keystore.ES256, TokenTTL: 15 * time.Minute, JWKSMaxAge: time.Minute, Leeway: time.Minute}
	if err := s.Load(p, ks); err != nil {
		t.Fatal(err)
	}
	active, _ := ks.Active()
	priv, _ := active.PrivateKey()
	der, _ := x509.MarshalPKIXPublicKey(priv.(crypto.Signer).Public())
	pubPEM := string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
	forge := func(claims map[string]any) string {
		sig, _ := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: priv}, (&jose.SignerOptions{}).WithHeader("kid", active.ID).WithType("JWT"))
		tok, err := josejwt.Signed(sig).Claims(claims).Serialize()
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	n := now.Unix()
	claims := func(extra map[string]any) map[string]any {
		return amend(map[string]any{"exp": n + 300, "iat": n, "iss": "https://keyd.test", "aud": "billing", "sub": "alice"}, extra)
	}
	good := forge(claims(nil))
	parts := strings.Split(good, ".")
	hs := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"HS256","kid":"` + active.ID + `"}`))
	type tcase struct {
		name   string
		token  string
		expect signer.Expect
	}
	aud := signer.Expect{Audience: []string{"billing"}}
	cases := []tcase{
		{"good", good, aud},
		{"garbage", "not-a-token", aud},
		{"alg swap", hs + "." + parts[1] + "." + parts[2], aud},
		{"bad signature", parts[0] + "." + parts[1] + "." + parts[2][:20] + "AAAA" + parts[2][24:], aud},
		{"no exp", forge(claims(map[string]any{"exp": nil})), aud},
		{"required claim", forge(claims(map[string]any{"scope": nil})), signer.Expect{Audience: []string{"billing"}, RequiredClaims: []string{"scope"}}},
		{"expired", forge(claims(map[string]any{"exp": n - 120})), aud},
		{"nbf", forge(claims(map[string]any{"nbf": n + 120})), aud},
		{"iat", forge(claims(map[string]any{"iat": n + 120})), aud},
		{"issuer", good, signer.Expect{Audience: []string{"billing"}, Issuer: "https://other"}},
		{"audience", good, signer.Expect{Audience: []string{"ledger"}}},
	}
	var in strings.Builder
	var want []string
	for _, c := range cases {
		_, err := s.Verify("s", c.token, c.expect)
		exc, ok := pyjwtException[signer.Code(err)]
		if !ok {
			t.Fatalf("%s: keyd says %q, which has no PyJWT counterpart", c.name, signer.Code(err))
		}
		want = append(want, c.name+"="+exc)
		line := map[string]any{"token": c.token, "key": pubPEM, "alg": "ES256", "leeway": 60, "audience": c.expect.Audience, "required": c.expect.RequiredClaims}
		if c.expect.Issuer != "" {
			line["issuer"] = c.expect.Issuer
		}
		b, _ := json.Marshal(line)
		in.Write(append(b, '\n'))
	}
	cmd := exec.Command(python, "testdata/pyjwt_verdicts.py")
	cmd.Stdin = strings.NewReader(in.String())
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("python: %v\n%s", err, out)
	}
	got := strings.Fields(string(out))
	if len(got) != len(cases) {
		t.Fatalf("PyJWT said %q", out)
	}
	for i, c := range cases {
		if c.name+"="+got[i] != want[i] {
			t.Errorf("%s: keyd's code maps to %s, PyJWT raised %s", c.name, strings.TrimPrefix(want[i], c.name+"="), got[i])
		}
	}
}
