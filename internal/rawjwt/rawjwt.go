// Package rawjwt is the least a JWT verifier does with the standard
// library alone: the signature over the signing input, the claims decoded
// into a map, exp read. It is the baseline keyd's verification is measured
// against (keyd-bench, the verify and API benchmarks), one copy for all of
// them; it applies none of keyd's rules and verifies nothing in keyd.
package rawjwt

import (
	"crypto/ecdsa"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"math/big"
	"strings"
	"time"
)

// Claims checks tok's signature over its signing input with sigOK, then
// decodes its claims into a map; ok is false when either fails, or exp is
// missing or not after now.
func Claims(tok string, sigOK func(input, sig []byte) bool, now time.Time) (claims map[string]any, ok bool) {
	dot1, dot2 := strings.IndexByte(tok, '.'), strings.LastIndexByte(tok, '.')
	if dot1 < 0 || dot1 == dot2 {
		return nil, false
	}
	sig, err := base64.RawURLEncoding.DecodeString(tok[dot2+1:])
	if err != nil || !sigOK([]byte(tok[:dot2]), sig) {
		return nil, false
	}
	payload, err := base64.RawURLEncoding.DecodeString(tok[dot1+1 : dot2])
	if err != nil || json.Unmarshal(payload, &claims) != nil {
		return nil, false
	}
	exp, ok := claims["exp"].(float64)
	return claims, ok && exp > float64(now.Unix())
}

// HS256 checks an HMAC-SHA256 signature with secret.
func HS256(secret []byte) func(input, sig []byte) bool {
	return func(input, sig []byte) bool {
		m := hmac.New(sha256.New, secret)
		m.Write(input)
		return hmac.Equal(m.Sum(nil), sig)
	}
}

// ES256 checks a JWS ECDSA P-256 signature (R||S) with pub.
func ES256(pub *ecdsa.PublicKey) func(input, sig []byte) bool {
	return func(input, sig []byte) bool {
		d := sha256.Sum256(input)
		return len(sig) == 64 && ecdsa.Verify(pub, d[:], new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:]))
	}
}
