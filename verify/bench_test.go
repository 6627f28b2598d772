package verify_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	jwtv5 "github.com/golang-jwt/jwt/v5"
	"github.com/lestrrat-go/jwx/v3/jwa"
	jwxjwt "github.com/lestrrat-go/jwx/v3/jwt"

	"github.com/keyd-dev/keyd/internal/api/apitest"
	"github.com/keyd-dev/keyd/internal/rawjwt"
	"github.com/keyd-dev/keyd/keystore"
	"github.com/keyd-dev/keyd/signer"
	"github.com/keyd-dev/keyd/tokencheck"
	"github.com/keyd-dev/keyd/verify"
)

// A contender verifies one token of keyd's: keyd's verify package (or, for
// HMAC key sets, which publish no key, its rules in tokencheck), the
// daemon's verification (signer.Verify, behind the verify endpoint), the
// libraries a service would pick instead, and the least any verifier
// does with the standard library (the signature over the signing input,
// the claims decoded into a map, exp read).
type contender struct {
	name   string
	verify func(token string) error
}

// contenders serves a key set of alg, signs one token through the API
// (sub, aud, iss, iat, exp, jti) and returns it with every contender set
// up to verify it.
func contenders(tb testing.TB, alg keystore.Algorithm) (string, []contender) {
	s := apitest.Serve(tb, nil, keystore.Policy{Name: "k", Algorithm: alg, Rotation: "@daily",
		TokenTTL: 10 * time.Minute, JWKSMaxAge: time.Minute, Leeway: time.Minute, Issuer: "https://keyd.test"})
	s.Clock.Add(time.Since(s.Clock.Now())) // tokens of the real clock, which the libraries read
	code, body := s.Call("POST", "/v1/keysets/k/sign", apitest.ServiceToken, `{"claims":{"sub":"alice","aud":"billing"}}`)
	var out struct{ Token string }
	if code != 200 || json.Unmarshal([]byte(body), &out) != nil {
		tb.Fatalf("sign: %d %s", code, body)
	}
	ks, p, err := s.Manager.KeySet("k")
	if err != nil {
		tb.Fatal(err)
	}
	daemon := signer.New(time.Now, nil)
	if err := daemon.Load(p, ks); err != nil {
		tb.Fatal(err)
	}
	active, _ := ks.Active()
	priv, err := active.PrivateKey()
	if err != nil {
		tb.Fatal(err)
	}
	key := priv
	if sg, ok := priv.(crypto.Signer); ok {
		key = sg.Public()
	}
	jalg, _ := jwa.LookupSignatureAlgorithm(string(alg))
	cs := []contender{{"raw-stdlib", rawVerifier(key)}}
	golangJWT := jwtv5.NewParser(jwtv5.WithValidMethods([]string{string(alg)}), jwtv5.WithExpirationRequired(), jwtv5.WithLeeway(time.Minute))
	cs = append(cs, contender{"golang-jwt-v5", func(tok string) error {
		_, err := golangJWT.Parse(tok, func(*jwtv5.Token) (any, error) { return key, nil })
		return err
	}})
	cs = append(cs, contender{"jwx-v3", func(tok string) error {
		_, err := jwxjwt.ParseString(tok, jwxjwt.WithKey(jalg, key), jwxjwt.WithAcceptableSkew(time.Minute))
		return err
	}})
	if alg.Symmetric() {
		keys := map[string]any{active.ID: key}
		cs = append(cs, contender{"keyd-tokencheck", func(tok string) error {
			_, err := tokencheck.Check(tok, jalg, func(kid string) (any, bool) { k, ok := keys[kid]; return k, ok },
				time.Now(), time.Minute, tokencheck.Expect{}, nil)
			return err
		}})
	} else {
		ctx, cancel := context.WithCancel(context.Background())
		tb.Cleanup(cancel)
		v, err := verify.New(ctx, s.URL, "k", verify.Options{Algorithm: string(alg)})
		if err != nil {
			tb.Fatal(err)
		}
		cs = append(cs, contender{"keyd-verify", func(tok string) error { _, err := v.Verify(ctx, tok); return err }})
	}
	cs = append(cs, contender{"keyd-daemon", func(tok string) error {
		_, err := daemon.Verify("k", tok, signer.Expect{})
		return err
	}})
	return out.Token, cs
}

var errRefused = errors.New("refused")

// rawVerifier is the least a verifier of alg does with the standard
// library alone (rawjwt).
func rawVerifier(key any) func(string) error {
	var sigOK func(input, sig []byte) bool
	switch k := key.(type) {
	case *ecdsa.PublicKey:
		sigOK = rawjwt.ES256(k)
	default: // an HMAC secret
		sigOK = rawjwt.HS256(k.([]byte))
	}
	return func(tok string) error {
		if _, ok := rawjwt.Claims(tok, sigOK, time.Now()); !ok {
			return errRefused
		}
		return nil
	}
}

// TestContendersVerifyTheSameToken: every contender the benchmark
// compares accepts keyd's token and refuses it with its signature changed,
// so none is measured doing less than verifying.
func TestContendersVerifyTheSameToken(t *testing.T) {
	for _, alg := range []keystore.Algorithm{keystore.ES256, keystore.HS256} {
		tok, cs := contenders(t, alg)
		dot := strings.LastIndexByte(tok, '.')
		other := byte('A')
		if tok[dot+5] == 'A' {
			other = 'B'
		}
		changed := tok[:dot+5] + string(other) + tok[dot+6:]
		for _, c := range cs {
			if err := c.verify(tok); err != nil {
				t.Errorf("%s %s refuses keyd's token: %v", alg, c.name, err)
			}
			if err := c.verify(changed); err == nil {
				t.Errorf("%s %s accepts a changed signature", alg, c.name)
			}
		}
	}
}

// BenchmarkVerifiers compares, in one run, verifying one ES256 and one
// HS256 token of keyd's: run it on one core (-cpu 1) and read each
// contender as a ratio of raw-stdlib (docs/performance.md).
func BenchmarkVerifiers(b *testing.B) {
	for _, alg := range []keystore.Algorithm{keystore.ES256, keystore.HS256} {
		tok, cs := contenders(b, alg)
		for _, c := range cs {
			b.Run(string(alg)+"/"+c.name, func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					if err := c.verify(tok); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// BenchmarkVerifierRatios measures the same contenders taking turns in
// short bursts, one round per iteration (-benchtime 40x: 40 rounds), and
// reports each one's median ns/op and its ratio to raw-stdlib: noise on a
// shared machine lands on every contender of a round alike, where one
// benchmark after another lets it land on one.
func BenchmarkVerifierRatios(b *testing.B) {
	for _, alg := range []keystore.Algorithm{keystore.ES256, keystore.HS256} {
		b.Run(string(alg), func(b *testing.B) {
			tok, cs := contenders(b, alg)
			burst := 40
			if alg.Symmetric() {
				burst = 600
			}
			rounds := make([][]float64, len(cs))
			for round := 0; b.Loop(); round++ {
				for j := range cs {
					c := (j + round) % len(cs) // each contender first in turn
					start := time.Now()
					for range burst {
						if err := cs[c].verify(tok); err != nil {
							b.Fatal(err)
						}
					}
					rounds[c] = append(rounds[c], float64(time.Since(start).Nanoseconds())/float64(burst))
				}
			}
			median := func(v []float64) float64 { slices.Sort(v); return v[len(v)/2] }
			raw := median(rounds[0])
			for i, c := range cs {
				m := median(rounds[i])
				b.ReportMetric(m, c.name+"-ns/op")
				if i > 0 {
					b.ReportMetric(raw/m, c.name+"-speed/raw")
				}
			}
		})
	}
}
