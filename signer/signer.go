// Package signer signs JWTs with a key set's active key and verifies tokens
// against a key set's published (and HMAC) keys, all from memory.
//
// A [Signer] holds one immutable [keyring] per key set behind an atomic
// pointer: keys are parsed once, when [Signer.Load] is given a new version
// of a key set, and Sign and Verify take no lock and read no storage. Load
// swaps the whole map, so a request sees either the old or the new keys,
// never a mix.
package signer

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jws"
	"github.com/lestrrat-go/jwx/v3/jwt"

	"github.com/keyd-dev/keyd/keystore"
)

// Signer signs and verifies for every loaded key set.
type Signer struct {
	now   func() time.Time
	mu    sync.Mutex // serialises Load; readers never take it
	rings atomic.Pointer[map[string]*keyring]
}

// keyring is one key set prepared for use; never modified once published.
type keyring struct {
	policy  keystore.Policy
	version uint64
	alg     jwa.SignatureAlgorithm
	kid     string
	key     any            // active key: crypto.Signer or HMAC secret
	verify  map[string]any // kid -> public key or HMAC secret, for keys that verify
	parsed  map[string]any // kid -> parsed private key, reused by the next Load
}

// Token is a signed JWT and what the caller needs to know about it.
type Token struct {
	Token     string
	KID       string
	Alg       keystore.Algorithm
	ExpiresAt time.Time
}

// Verified is the result of a successful verification.
type Verified struct {
	KID    string
	Claims map[string]any
}

// New returns an empty Signer reading time from now.
func New(now func() time.Time) *Signer {
	s := &Signer{now: now}
	s.rings.Store(&map[string]*keyring{})
	return s
}

// Load prepares ks, configured by p, for signing and verifying, replacing
// the previous version of the key set. Keys already parsed for the previous
// version are reused. A key set older than the loaded one is ignored.
func (s *Signer) Load(p keystore.Policy, ks *keystore.KeySet) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	old := (*s.rings.Load())[ks.Name]
	if old != nil && ks.Version != 0 && ks.Version < old.version {
		return nil
	}
	ring, err := newKeyring(p, ks, old)
	if err != nil {
		return err
	}
	next := maps.Clone(*s.rings.Load())
	next[ks.Name] = ring
	s.rings.Store(&next)
	return nil
}

func newKeyring(p keystore.Policy, ks *keystore.KeySet, old *keyring) (*keyring, error) {
	if err := ks.Check(); err != nil {
		return nil, err
	}
	alg, ok := jwa.LookupSignatureAlgorithm(string(ks.Algorithm))
	if !ok {
		return nil, fmt.Errorf("%w: %s", keystore.ErrUnsupportedAlgorithm, ks.Algorithm)
	}
	r := &keyring{policy: p, version: ks.Version, alg: alg, verify: map[string]any{}, parsed: map[string]any{}}
	for _, k := range ks.Keys {
		if !k.Verifies() {
			continue
		}
		priv, reused := any(nil), false
		if old != nil {
			priv, reused = old.parsed[k.ID]
		}
		if !reused {
			var err error
			if priv, err = k.PrivateKey(); err != nil {
				return nil, err
			}
		}
		r.parsed[k.ID] = priv
		if signer, ok := priv.(crypto.Signer); ok {
			r.verify[k.ID] = signer.Public()
		} else {
			r.verify[k.ID] = priv
		}
		if k.State == keystore.StateActive {
			r.kid, r.key = k.ID, priv
		}
	}
	return r, nil
}

func (s *Signer) ring(name string) (*keyring, error) {
	r, ok := (*s.rings.Load())[name]
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrUnknownKeySet, name)
	}
	return r, nil
}

// Sign signs claims with the active key of the key set called name. The
// token lives for ttl (0: the key set's token_ttl, which is also the
// maximum) unless claims carry an exp within that limit. iat is always now;
// jti is random and iss is the key set's issuer unless the claims give
// them.
func (s *Signer) Sign(name string, claims map[string]any, ttl time.Duration) (*Token, error) {
	r, err := s.ring(name)
	if err != nil {
		return nil, err
	}
	now := s.now().Truncate(time.Second)
	out := make(map[string]any, len(claims)+4)
	maps.Copy(out, claims)

	maxTTL := r.policy.TokenTTL
	var exp time.Time
	if raw, given := claims["exp"]; given {
		if ttl != 0 {
			return nil, invalid("give either ttl or claims.exp, not both")
		}
		secs, ok := numericDate(raw)
		if !ok {
			return nil, invalid("claims.exp must be a NumericDate (whole seconds since the epoch)")
		}
		exp = time.Unix(secs, 0)
		if !exp.After(now) {
			return nil, invalid("claims.exp is not in the future")
		}
		if exp.Sub(now) > maxTTL {
			return nil, invalid("claims.exp is %v from now, beyond the key set's token_ttl of %v", exp.Sub(now), maxTTL)
		}
	} else {
		if ttl < 0 {
			return nil, invalid("ttl must be positive")
		}
		if ttl > maxTTL {
			return nil, invalid("ttl %v exceeds the key set's token_ttl of %v", ttl, maxTTL)
		}
		if ttl == 0 {
			ttl = maxTTL
		}
		if ttl < time.Second {
			return nil, invalid("ttl must be at least 1s")
		}
		exp = now.Add(ttl)
	}
	if raw, given := claims["nbf"]; given {
		if _, ok := numericDate(raw); !ok {
			return nil, invalid("claims.nbf must be a NumericDate (whole seconds since the epoch)")
		}
	}
	out["exp"] = exp.Unix()
	out["iat"] = now.Unix()
	if _, given := claims["jti"]; !given {
		out["jti"] = randomID()
	}
	if _, given := claims["iss"]; !given && r.policy.Issuer != "" {
		out["iss"] = r.policy.Issuer
	}
	payload, err := json.Marshal(out)
	if err != nil {
		return nil, invalid("claims do not encode as JSON")
	}
	hdr := jws.NewHeaders()
	_ = hdr.Set(jws.KeyIDKey, r.kid)
	_ = hdr.Set(jws.TypeKey, "JWT")
	signed, err := jws.Sign(payload, jws.WithKey(r.alg, r.key, jws.WithProtectedHeaders(hdr)))
	if err != nil {
		// jwx's sign errors describe algorithms and key types, never key
		// bytes; still, keep them out of what callers see.
		return nil, fmt.Errorf("%w: sign with %s key %s failed", ErrInternal, r.alg, r.kid)
	}
	return &Token{Token: string(signed), KID: r.kid, Alg: keystore.Algorithm(r.alg.String()), ExpiresAt: exp.UTC()}, nil
}

// Verify checks token against the key set called name: one signature, by a
// key of the set that still verifies (published, or HMAC, and not revoked),
// with the key set's algorithm, and a valid exp (required), nbf and iat,
// allowing the key set's leeway. Failures wrap ErrInvalidToken and say why
// in words safe to show the caller.
func (s *Signer) Verify(name, token string) (*Verified, error) {
	r, err := s.ring(name)
	if err != nil {
		return nil, err
	}
	msg, err := jws.Parse([]byte(token))
	if err != nil || len(msg.Signatures()) != 1 {
		return nil, rejected("malformed token")
	}
	hdr := msg.Signatures()[0].ProtectedHeaders()
	alg, _ := hdr.Algorithm()
	if alg.String() != r.alg.String() {
		return nil, rejected("algorithm %q is not accepted by key set %s (it signs with %s)", alg.String(), name, r.alg)
	}
	kid, _ := hdr.KeyID()
	key, ok := r.verify[kid]
	if !ok {
		return nil, rejected("unknown or revoked key id %q", kid)
	}
	payload, err := jws.Verify([]byte(token), jws.WithKey(r.alg, key))
	if err != nil {
		return nil, rejected("invalid signature")
	}
	_, err = jwt.Parse(payload, jwt.WithVerify(false), jwt.WithValidate(true),
		jwt.WithClock(jwt.ClockFunc(s.now)), jwt.WithAcceptableSkew(r.policy.Leeway),
		jwt.WithRequiredClaim("exp"))
	switch {
	case errors.Is(err, jwt.TokenExpiredError()):
		return nil, rejected("token expired")
	case errors.Is(err, jwt.TokenNotYetValidError()):
		return nil, rejected("token not valid yet (nbf)")
	case errors.Is(err, jwt.InvalidIssuedAtError()):
		return nil, rejected("token issued in the future (iat)")
	case errors.Is(err, jwt.MissingRequiredClaimError()):
		return nil, rejected("token has no exp")
	case err != nil:
		return nil, rejected("invalid claims")
	}
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.UseNumber()
	var claims map[string]any
	if err := dec.Decode(&claims); err != nil {
		return nil, rejected("invalid claims")
	}
	return &Verified{KID: kid, Claims: claims}, nil
}

// numericDate accepts a JSON number holding whole seconds.
func numericDate(v any) (int64, bool) {
	switch n := v.(type) {
	case json.Number:
		i, err := n.Int64()
		return i, err == nil
	case float64:
		if n != math.Trunc(n) || math.Abs(n) > 1<<53 {
			return 0, false
		}
		return int64(n), true
	case int64:
		return n, true
	case int:
		return int64(n), true
	}
	return 0, false
}

func randomID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go 1.24+)
	return base64.RawURLEncoding.EncodeToString(b)
}
