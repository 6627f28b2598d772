package signer_test

import (
	"testing"

	"github.com/keyd-dev/keyd/keystore"
	"github.com/keyd-dev/keyd/signer"
)

// BenchmarkSign measures in-process signing per algorithm: claims in, compact
// JWT out, as the sign endpoint does it.
func BenchmarkSign(b *testing.B) {
	for _, alg := range keystore.Algorithms {
		b.Run(string(alg), func(b *testing.B) {
			s, _, _, _ := setup(b, alg)
			claims := claimsOf(map[string]any{"sub": "alice", "aud": "billing", "scope": "read write"})
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := s.Sign("s", claims, 0); err != nil {
						b.Fatal(err)
					}
				}
			})
		})
	}
}

// BenchmarkVerify measures the verify endpoint's work for one algorithm of
// each family.
func BenchmarkVerify(b *testing.B) {
	for _, alg := range []keystore.Algorithm{keystore.HS256, keystore.RS256, keystore.ES256, keystore.EdDSA} {
		b.Run(string(alg), func(b *testing.B) {
			s, _, _, _ := setup(b, alg)
			tok, err := s.Sign("s", claimsOf(map[string]any{"sub": "alice"}), 0)
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := s.Verify("s", tok.Token, signer.Expect{}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
