package signer

import (
	"fmt"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwa"

	"github.com/keyd-dev/keyd/tokencheck"
)

// Verified is the result of a successful verification.
type Verified = tokencheck.Verified

// Expect is what a verification requires of a token beyond a valid
// signature and lifetime (tokencheck.Expect).
type Expect = tokencheck.Expect

// Revoked is a set of revoked tokens as a verifier holds it from a
// revocation list (tokencheck.Revoked).
type Revoked = tokencheck.Revoked

// Check verifies a compact token by keyd's rules (tokencheck.Check).
func Check(token string, alg jwa.SignatureAlgorithm, key func(kid string) (any, bool), now time.Time, leeway time.Duration,
	want Expect, revoked func(claims map[string]any) error) (*Verified, error) {
	return tokencheck.Check(token, alg, key, now, leeway, want, revoked)
}

// CheckClaims applies keyd's claim rules (tokencheck.CheckClaims).
func CheckClaims(claims map[string]any, now time.Time, leeway time.Duration, want Expect) error {
	return tokencheck.CheckClaims(claims, now, leeway, want)
}

// Verify checks token against the key set called name, in a fixed order
// so that a forged token learns nothing of its claims: structure (one
// compact JWS signature, JSON claims), algorithm (exactly the key set's),
// key (a kid of the set that still verifies, never a revoked one),
// signature, then the claims: required claims (exp always), exp, nbf and
// iat with the key set's leeway, iss, aud, sub, and the header's typ.
// Failures wrap ErrInvalidToken, carry one of the Code constants, and say
// why in words safe to show the caller.
func (s *Signer) Verify(name, token string, want Expect) (*Verified, error) {
	r, err := s.ring(name)
	if err != nil {
		return nil, err
	}
	v, err := r.verifyToken(token, s.now(), want)
	r.obs.Verified(Code(err))
	if err == nil && v.Legacy {
		r.obs.LegacyVerified()
		r.legacySeen.Store(s.now().Unix())
	}
	return v, err
}

// Inspect verifies as Verify does without telling the observer: for
// keyd's own checks of a token (revoking it), which are not a service's
// verification.
func (s *Signer) Inspect(name, token string) (*Verified, error) {
	r, err := s.ring(name)
	if err != nil {
		return nil, err
	}
	return r.verifyToken(token, s.now(), Expect{})
}

func (r *keyring) verifyToken(token string, now time.Time, want Expect) (*Verified, error) {
	if l := r.policy.Legacy; l.InForce(now) {
		want.LegacyKID, want.AllowMissingExp = l.KID, l.AllowMissingExp
	}
	v, err := Check(token, r.jwaAlg, r.key, now, r.policy.Leeway, want, r.checkRevoked)
	if err == nil {
		// An imported key verifies until its verify_until to the second,
		// on every replica, whatever the scheduler (which removes it at its
		// next tick) has done yet.
		if until, ok := r.until[v.KID]; ok && !now.Before(until) {
			return nil, &Error{Kind: ErrInvalidToken, Code: CodeUnknownKey, KID: v.KID, Reason: fmt.Sprintf("key %q stopped verifying at %s (verify_until)", v.KID, until.UTC().Format(time.RFC3339))}
		}
	}
	return v, err
}

// checkRevoked is Check's revocation step: the index, a lookup of the jti
// and of the subject. Entries that have expired cover only expired
// tokens, which fail earlier, so the index's clock is not needed here.
func (r *keyring) checkRevoked(claims map[string]any) error {
	revoked, before := r.revs.Revoked(r.name, claims)
	switch {
	case !revoked:
		return nil
	case before.IsZero():
		return rejected(CodeRevoked, "the token has been revoked")
	}
	return rejected(CodeRevoked, "every token of this subject issued until %s has been revoked", before.UTC().Format(time.RFC3339))
}

// key returns the key that verifies tokens of kid: a public key, or the
// HMAC secret.
func (r *keyring) key(kid string) (any, bool) {
	k, ok := r.verify[kid]
	return k, ok
}
