package main

// The raw signer: the standard library signing the same tokens, the baseline keyd is measured against.

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/keyd-dev/keyd/internal/rawjwt"
	"golang.org/x/crypto/cryptobyte"
	"golang.org/x/crypto/cryptobyte/asn1"
)

// rawSign makes JWS tokens of alg in this process, on every core, the
// least a signer must do: encode claims with a fresh jti, encode, sign.
func rawSign(alg string) result {
	raw := newRawTokens(alg)
	return onEveryCore(func() func() {
		jti := make([]byte, 16)
		return func() { _ = raw.token(jti) }
	})
}

// onEveryCore runs an op made by newOp on every processor (one each) for
// the duration and returns their rate and the process's CPU per op.
func onEveryCore(newOp func() (op func())) result {
	var count atomic.Int64
	var ru0, ru1 syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)
	start := time.Now()
	stop := start.Add(*duration)
	var wg sync.WaitGroup
	for range runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			op := newOp()
			for time.Now().Before(stop) {
				op()
				count.Add(1)
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru1)
	cpu := time.Duration(syscall.TimevalToNsec(ru1.Utime)-syscall.TimevalToNsec(ru0.Utime)) +
		time.Duration(syscall.TimevalToNsec(ru1.Stime)-syscall.TimevalToNsec(ru0.Stime))
	n := count.Load()
	return result{perSec: float64(n) / elapsed.Seconds(), cpuPer: float64(cpu.Microseconds()) / float64(n)}
}

// rawTokens makes JWS tokens of one algorithm, the least a signer must do.
type rawTokens struct {
	header string
	sign   func([]byte) []byte
}

func newRawTokens(alg string) *rawTokens {
	return &rawTokens{
		header: base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"` + alg + `","kid":"bench","typ":"JWT"}`)),
		sign:   rawSigner(alg),
	}
}

// token encodes claims with a fresh jti (read into jti, 16 bytes), encodes,
// signs.
func (t *rawTokens) token(jti []byte) string {
	_, _ = rand.Read(jti)
	now := time.Now().Unix()
	payload := fmt.Appendf(nil, `{"aud":"billing","exp":%d,"iat":%d,"jti":"%s","sub":"alice"}`, now+300, now, base64.RawURLEncoding.EncodeToString(jti))
	input := t.header + "." + base64.RawURLEncoding.EncodeToString(payload)
	return input + "." + base64.RawURLEncoding.EncodeToString(t.sign([]byte(input)))
}

// p256RS turns a DER ECDSA P-256 signature into JWS's R||S.
func p256RS(der []byte) []byte {
	var seq, r, s cryptobyte.String
	in := cryptobyte.String(der)
	in.ReadASN1(&seq, asn1.SEQUENCE)
	seq.ReadASN1(&r, asn1.INTEGER)
	seq.ReadASN1(&s, asn1.INTEGER)
	out := make([]byte, 64)
	rb, sb := bytes.TrimLeft(r, "\x00"), bytes.TrimLeft(s, "\x00")
	copy(out[32-len(rb):32], rb)
	copy(out[64-len(sb):], sb)
	return out
}

func rawSigner(alg string) func([]byte) []byte {
	sign, _ := rawKeys(alg)
	return sign
}

// rawKeys returns a signer and a verifier of alg over one new key: the
// standard library alone.
func rawKeys(alg string) (sign func([]byte) []byte, verify func(input, sig []byte) bool) {
	switch alg {
	case "ES256":
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		return func(in []byte) []byte {
			d := sha256.Sum256(in)
			der, _ := ecdsa.SignASN1(rand.Reader, k, d[:])
			return p256RS(der)
		}, rawjwt.ES256(&k.PublicKey)
	case "EdDSA":
		pub, k, _ := ed25519.GenerateKey(rand.Reader)
		return func(in []byte) []byte { return ed25519.Sign(k, in) }, func(in, sig []byte) bool { return ed25519.Verify(pub, in, sig) }
	case "HS256":
		secret := make([]byte, 32)
		_, _ = rand.Read(secret)
		return func(in []byte) []byte { m := hmac.New(sha256.New, secret); m.Write(in); return m.Sum(nil) }, rawjwt.HS256(secret)
	case "RS256":
		k, _ := rsa.GenerateKey(rand.Reader, 2048)
		return func(in []byte) []byte {
				d := sha256.Sum256(in)
				sig, _ := rsa.SignPKCS1v15(nil, k, crypto.SHA256, d[:])
				return sig
			}, func(in, sig []byte) bool {
				d := sha256.Sum256(in)
				return rsa.VerifyPKCS1v15(&k.PublicKey, crypto.SHA256, d[:], sig) == nil
			}
	}
	panic("unknown algorithm " + alg)
}

// rawVerifier makes tokens of alg as rawTokens does and verifies them as
// the least a verifier does: the signature over the signing input, the
// claims decoded into a map, exp read.
type rawVerifier struct {
	tokens *rawTokens
	verify func(input, sig []byte) bool
}

func newRawVerifier(alg string) *rawVerifier {
	sign, verify := rawKeys(alg)
	t := newRawTokens(alg)
	t.sign = sign
	return &rawVerifier{tokens: t, verify: verify}
}

func (v *rawVerifier) claims(tok string) (map[string]any, bool) {
	return rawjwt.Claims(tok, v.verify, time.Now())
}

// rawVerify verifies one token of alg in this process on every core for
// the duration: the crypto limit of a verifier.
func rawVerify(alg string) result {
	v := newRawVerifier(alg)
	tok := v.tokens.token(make([]byte, 16))
	return onEveryCore(func() func() {
		return func() {
			if _, ok := v.claims(tok); !ok {
				panic("the raw verifier refused its own token")
			}
		}
	})
}
