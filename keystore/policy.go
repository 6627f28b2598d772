package keystore

import (
	"crypto"
	"fmt"
	"slices"
	"time"
)

// Policy is a key set's configured settings: what keys it makes, when it
// rotates, and the timings every lifecycle decision derives from.
type Policy struct {
	Name       string
	Algorithm  Algorithm
	RSABits    int           // RSA only; 0 means DefaultRSABits
	Rotation   string        // cron spec (robfig/cron/v3 syntax)
	TokenTTL   time.Duration // default and maximum lifetime of a signed token
	JWKSMaxAge time.Duration // Cache-Control max-age of the JWKS
	Leeway     time.Duration // clock skew allowed when verifying exp and nbf
	Issuer     string        // iss claim added when the caller gives none
	// PublishDelay is how long a change can take to reach every JWKS
	// document and signer keyd serves: a second for a single process (the
	// write, then the re-render), the poll interval more for replicas
	// sharing Vault.
	PublishDelay time.Duration
	// Verify is what the verify endpoint requires of every token.
	Verify VerifyPolicy
	// MaxRevocations bounds the token revocations in force; 0 means
	// DefaultMaxRevocations.
	MaxRevocations int
	// RefreshTTL, when set, enables access + refresh token pairs: how long
	// a login's refresh tokens work.
	RefreshTTL time.Duration
	// Legacy lets tokens without a kid verify against one imported key,
	// for a while (a signer that wrote no kid, as PyJWT by default).
	Legacy LegacyPolicy
	// Certificates, when set, gives each published key an X.509
	// certificate (x5c and x5t#S256 in the JWKS).
	Certificates Certifier
	// Custody, when set, holds the key set's new keys (Vault Transit);
	// nil: keyd holds them itself.
	Custody Custody
}

// Certifier issues and renews the X.509 certificates of a key set's
// published keys (package certs). The store keeps each key's certificate;
// the certifier decides when one is due and makes it.
type Certifier interface {
	// Issue makes a certificate (DER) for the key kid of keyset whose
	// public key is pub; self is the key's own signer, nil for a
	// public-only key.
	Issue(keyset, kid string, pub crypto.PublicKey, self crypto.Signer, now time.Time) ([]byte, error)
	// RenewAt is when a certificate should be replaced; ok false means
	// now (missing, unreadable, or not this certifier's).
	RenewAt(der []byte) (at time.Time, ok bool)
	// Chain is the x5c of a certificate: it, then its issuers.
	Chain(leaf []byte) [][]byte
}

// LegacyPolicy names the imported key that verifies tokens without a kid,
// and until when. The zero value is off.
type LegacyPolicy struct {
	KID   string
	Until time.Time
	// AllowMissingExp also accepts such tokens without exp until Until.
	AllowMissingExp bool
}

// InForce reports whether tokens without a kid are still accepted at now.
func (l LegacyPolicy) InForce(now time.Time) bool { return l.KID != "" && now.Before(l.Until) }

// PublishedFor is how long a pending key must have existed before it may
// sign: jwks_max_age for every cached JWKS to have been refreshed, plus the
// time the key takes to reach every replica's JWKS.
func (p Policy) PublishedFor() time.Duration { return p.JWKSMaxAge + p.PublishDelay }

// Grace is how long a retired or revoked key is kept after it stopped
// signing: every token it signed has expired (token_ttl, plus leeway for
// verifiers' clocks, plus the publish delay during which a replica that has
// not seen the rotation yet still signs with it) and every cached JWKS has
// been refreshed (jwks_max_age).
func (p Policy) Grace() time.Duration { return p.TokenTTL + p.JWKSMaxAge + p.Leeway + p.PublishDelay }

// TokensEndBy is the latest time at which a token that the key set ks
// verifies at now can still be valid, leeway aside: now + token_ttl for
// the tokens keyd signs; an imported key's verify_until (or, without one,
// its retirement plus the grace, when it is destroyed) for the tokens
// another issuer signed with it, whatever their exp; legacy.until while
// tokens without a kid (some without exp) are accepted. A revocation kept
// until then (plus leeway) outlives every token it can cover.
func (p Policy) TokensEndBy(ks *KeySet, now time.Time) time.Time {
	end := now.Add(p.TokenTTL)
	if ks != nil {
		for _, k := range ks.Keys {
			if !k.Imported || !k.Verifies() {
				continue
			}
			until := k.VerifyUntil
			if until.IsZero() {
				if k.RetiredAt.IsZero() {
					continue // signs or will: keyd's own tokens, within token_ttl
				}
				until = k.RetiredAt.Add(p.Grace())
			}
			if until.After(end) {
				end = until
			}
		}
	}
	if p.Legacy.InForce(now) && p.Legacy.Until.After(end) {
		end = p.Legacy.Until
	}
	return end
}

// RevocationsEndBy is when a revocation entry of the key set ks, made at
// now, may leave at the latest: the last token it can cover expires
// (TokensEndBy), past the leeway and a second (iat has whole seconds).
// Every revocation keyd makes, imports or reads back is held to it.
func (p Policy) RevocationsEndBy(ks *KeySet, now time.Time) time.Time {
	return p.TokensEndBy(ks, now).Add(p.Leeway + time.Second)
}

// RevocationLimit is how many revocations the key set may hold in force:
// MaxRevocations, or DefaultMaxRevocations.
func (p Policy) RevocationLimit() int {
	if p.MaxRevocations > 0 {
		return p.MaxRevocations
	}
	return DefaultMaxRevocations
}

// VerifyPolicy is what a key set's verify endpoint requires of every token
// (config: keysets[].verify). A request may narrow it, never drop it.
type VerifyPolicy struct {
	Audience       []string // the token's aud must contain one of these
	Issuer         string   // the token's iss must be this
	RequiredClaims []string // these claims must be present
}

// Narrow merges a verify request's own demands into the key set's policy:
// the request may pick among the allowed audiences (not add others), must
// agree with the configured issuer, and may require more claims. It
// returns an error, wrapping ErrInvalidPolicy and naming the field, when
// the request would widen the policy.
func (vp VerifyPolicy) Narrow(audience []string, issuer string, required []string) (VerifyPolicy, error) {
	out := VerifyPolicy{Audience: vp.Audience, Issuer: vp.Issuer, RequiredClaims: vp.RequiredClaims}
	if len(audience) > 0 {
		if len(vp.Audience) > 0 {
			for _, a := range audience {
				if !slices.Contains(vp.Audience, a) {
					return VerifyPolicy{}, fmt.Errorf("%w: audience %q is not one the key set accepts (%q)", ErrInvalidPolicy, a, vp.Audience)
				}
			}
		}
		out.Audience = audience
	}
	if issuer != "" {
		if vp.Issuer != "" && issuer != vp.Issuer {
			return VerifyPolicy{}, fmt.Errorf("%w: issuer %q differs from the key set's %q", ErrInvalidPolicy, issuer, vp.Issuer)
		}
		out.Issuer = issuer
	}
	if len(required) > 0 {
		out.RequiredClaims = append(slices.Clone(vp.RequiredClaims), required...)
	}
	return out, nil
}
