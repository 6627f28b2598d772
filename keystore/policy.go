package keystore

import "time"

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
}

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
