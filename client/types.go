package client

import "time"

// These are keyd's wire types: the daemon encodes them, the client decodes
// them, so both always agree.

// Token is a signed token, as sign and sign-batch answer it.
type Token struct {
	Token     string    `json:"token"`
	KID       string    `json:"kid"`
	Alg       string    `json:"alg"`
	ExpiresAt time.Time `json:"expires_at"`
}

// BatchResult is one item of a sign-batch answer: a token, or the item's
// own error.
type BatchResult struct {
	*Token
	Error *Problem `json:"error,omitempty"`
}

// Problem is the body of an error answer: a stable code and words for
// people.
type Problem struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// Pair is an access token and its refresh token (OAuth 2.0's token
// response fields).
type Pair struct {
	AccessToken      string `json:"access_token"`
	RefreshToken     string `json:"refresh_token"`
	TokenType        string `json:"token_type"`
	ExpiresIn        int64  `json:"expires_in"`
	RefreshExpiresIn int64  `json:"refresh_expires_in"`
}

// Verification is the verify endpoint's answer: valid with the claims, or
// not valid with a stable code (the verify codes of the README).
type Verification struct {
	Valid  bool           `json:"valid"`
	Claims map[string]any `json:"claims,omitempty"`
	KID    string         `json:"kid,omitempty"`
	Code   string         `json:"code,omitempty"`
	Error  string         `json:"error,omitempty"`
}

// KeySet is what the admin API shows of a key set: settings, states and
// timestamps, never key material.
type KeySet struct {
	Name       string    `json:"name"`
	Algorithm  string    `json:"algorithm"`
	Rotation   string    `json:"rotation"`
	TokenTTL   string    `json:"token_ttl"`
	JWKSMaxAge string    `json:"jwks_max_age"`
	Leeway     string    `json:"leeway"`
	Issuer     string    `json:"issuer,omitempty"`
	RotatedAt  time.Time `json:"rotated_at"`
	// NextRotation is when the scheduler will rotate next: the schedule's
	// next time, or later if the pending key is still too young then.
	NextRotation time.Time `json:"next_rotation"`
	// RotationWaitsFor says what a due rotation waits for besides
	// jwks_max_age: the publishing targets that do not hold the pending
	// key yet, or whose readers' caches may not have it ("" for none).
	RotationWaitsFor string `json:"rotation_waits_for,omitempty"`
	Version          uint64 `json:"version"`
	Keys             []Key  `json:"keys"`
	// Legacy is set when tokens without a kid verify with an imported key.
	Legacy *Legacy `json:"legacy,omitempty"`
}

// Legacy says which imported key verifies tokens without a kid, until
// when, and when such a token last verified (zero: not since keyd
// started): once that is long past, the legacy setting can go.
type Legacy struct {
	KID             string    `json:"kid"`
	Until           time.Time `json:"until"`
	AllowMissingExp bool      `json:"allow_missing_exp"`
	LastVerified    time.Time `json:"last_verified,omitzero"`
}

// ImportResult is the answer to an import: the key set, its new keys
// marked Imported, and warnings (a short HMAC secret, allowed verify-only).
type ImportResult struct {
	KeySet
	Warnings []string `json:"warnings"`
}

// Key is one key of a KeySet.
type Key struct {
	KID         string    `json:"kid"`
	Alg         string    `json:"alg"`
	State       string    `json:"state"`
	Published   bool      `json:"published"`
	CreatedAt   time.Time `json:"created_at"`
	ActivatedAt time.Time `json:"activated_at,omitzero"`
	RetiredAt   time.Time `json:"retired_at,omitzero"`
	RevokedAt   time.Time `json:"revoked_at,omitzero"`
	DestroyAt   time.Time `json:"destroy_at,omitzero"`
	// Imported keys came from outside keyd; PublicOnly ones have no
	// private half and only verify.
	Imported   bool `json:"imported,omitempty"`
	PublicOnly bool `json:"public_only,omitempty"`
	// CertificateExpiresAt is when the key's X.509 certificate expires
	// (key sets with certificates); keyd renews it before.
	CertificateExpiresAt time.Time `json:"certificate_expires_at,omitzero"`
}

// Revocations are a key set's token revocations in force.
type Revocations struct {
	KeySet   string           `json:"keyset"`
	Tokens   []RevokedToken   `json:"tokens"`
	Subjects []RevokedSubject `json:"subjects"`
	// InForce counts every revocation in force; Truncated says the lists
	// hold only the newest (the request's limit).
	InForce   int  `json:"in_force"`
	Truncated bool `json:"truncated"`
}

// RevokedToken is one revoked token.
type RevokedToken struct {
	JTI       string    `json:"jti"`
	Exp       time.Time `json:"exp"`
	RevokedAt time.Time `json:"revoked_at"`
	Reason    string    `json:"reason,omitempty"`
}

// RevokedSubject is one revoked subject.
type RevokedSubject struct {
	Sub          string    `json:"sub"`
	IssuedBefore time.Time `json:"issued_before"` // tokens with iat at or before it are revoked
	Until        time.Time `json:"until"`         // when the entry is dropped
	RevokedAt    time.Time `json:"revoked_at"`
	Reason       string    `json:"reason,omitempty"`
}
