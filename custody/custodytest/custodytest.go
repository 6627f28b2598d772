// Package custodytest is the conformance suite every keystore.Custody
// passes (custody/transit on a real OpenBao): keys made in the custody sign
// tokens through keyd's signer, alone and in a batch signed concurrently,
// that go-jose verifies with the public key the custody gave, and a
// destroyed key signs no more.
package custodytest

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	josejwt "github.com/go-jose/go-jose/v4/jwt"

	"github.com/keyd-dev/keyd/keystore"
	"github.com/keyd-dev/keyd/signer"
)

// batch signs 50 tokens in one batch, as many at once as the custody
// takes: each is signed for its own claims (go-jose checks the public
// key's, keyd its custody MACs).
func batch(t *testing.T, sg *signer.Signer, alg keystore.Algorithm, active keystore.Key) {
	t.Helper()
	b, err := sg.Batch("suite")
	if err != nil {
		t.Fatal(err)
	}
	items := make([]signer.Item, 50)
	for i := range items {
		items[i].Claims = signer.Claims{"sub": fmt.Appendf(nil, `"user-%d"`, i)}
	}
	toks, errs := b.SignAll(items)
	for i, tok := range toks {
		if errs[i] != nil {
			t.Fatalf("batch item %d: %v", i, errs[i])
		}
		want := fmt.Sprintf("user-%d", i)
		if alg.Symmetric() {
			if _, err := sg.Verify("suite", tok.Token, signer.Expect{Subject: want}); err != nil {
				t.Fatalf("batch item %d: %v", i, err)
			}
			continue
		}
		pub, _ := active.VerificationKey()
		parsed, err := josejwt.ParseSigned(tok.Token, []jose.SignatureAlgorithm{jose.SignatureAlgorithm(alg)})
		if err != nil {
			t.Fatal(err)
		}
		var claims josejwt.Claims
		if err := parsed.Claims(pub, &claims); err != nil || claims.Subject != want {
			t.Fatalf("batch item %d, go-jose: %v, sub %q", i, err, claims.Subject)
		}
	}
}

// Run checks c with each of algs.
func Run(t *testing.T, c keystore.Custody, algs []keystore.Algorithm) {
	ctx := context.Background()
	for _, alg := range algs {
		t.Run(string(alg), func(t *testing.T) {
			now := time.Now()
			var keys []keystore.Key
			for range 2 {
				ref, pub, err := c.Create(ctx, "suite", alg, 0)
				if err != nil {
					t.Fatalf("create: %v", err)
				}
				k, err := keystore.NewCustodyKey(alg, c.Name(), ref, pub, now)
				if err != nil {
					t.Fatalf("a key of the custody: %v", err)
				}
				keys = append(keys, k)
			}
			defer func() {
				for _, k := range keys {
					_ = c.Destroy(ctx, k.Ref())
				}
			}()
			if keys[0].Ref() == keys[1].Ref() || keys[0].ID == keys[1].ID {
				t.Fatal("two keys share a reference or a kid")
			}
			if _, err := keys[0].PrivateKey(); !errors.Is(err, keystore.ErrNoPrivateKey) {
				t.Fatalf("a custody key gave a private key: %v", err)
			}
			ks, err := keystore.NewKeySet("suite", alg, keys[0], keys[1], now)
			if err != nil {
				t.Fatal(err)
			}
			p := keystore.Policy{Name: "suite", Algorithm: alg, TokenTTL: time.Minute, JWKSMaxAge: time.Minute, Custody: c}
			sg := signer.New(time.Now, nil)
			if err := sg.Load(p, ks); err != nil {
				t.Fatalf("load: %v", err)
			}
			tok, err := sg.Sign("suite", signer.Claims{"sub": []byte(`"custody"`)}, 0)
			if err != nil {
				t.Fatalf("sign through the custody: %v", err)
			}
			active, _ := ks.Active()
			if alg.Symmetric() {
				// The secret never leaves the custody: only keyd verifies,
				// by asking it; a token with another MAC is refused.
				tampered := tok.Token[:len(tok.Token)-2] + map[bool]string{true: "AA", false: "BB"}[!strings.HasSuffix(tok.Token, "AA")]
				if _, err := sg.Verify("suite", tampered, signer.Expect{}); signer.Code(err) != signer.CodeSignature {
					t.Fatalf("a token with another MAC: %v", err)
				}
			} else {
				pub, _ := active.VerificationKey()
				parsed, err := josejwt.ParseSigned(tok.Token, []jose.SignatureAlgorithm{jose.SignatureAlgorithm(alg)})
				if err != nil {
					t.Fatal(err)
				}
				var claims josejwt.Claims
				if err := parsed.Claims(pub, &claims); err != nil || claims.Subject != "custody" {
					t.Fatalf("go-jose with the custody's public key: %v", err)
				}
			}
			if _, err := sg.Verify("suite", tok.Token, signer.Expect{}); err != nil {
				t.Fatalf("keyd's own verification: %v", err)
			}
			batch(t, sg, alg, active)
			// Destroyed: it signs no more, and destroying it again is fine.
			if err := c.Destroy(ctx, active.Ref()); err != nil {
				t.Fatalf("destroy: %v", err)
			}
			if err := c.Destroy(ctx, active.Ref()); err != nil {
				t.Fatalf("destroy again: %v", err)
			}
			if _, err := sg.Sign("suite", signer.Claims{"sub": []byte(`"x"`)}, 0); !errors.Is(err, keystore.ErrCustodyUnavailable) {
				t.Fatalf("signing with a destroyed key: %v", err)
			}
		})
	}
}
