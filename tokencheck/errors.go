// Package tokencheck is keyd's rules for a token, in keyd's order, and the
// wire form of its revocation lists: the checks the verify endpoint and
// the client-side verify package both run (Check, CheckClaims), the codes
// a failure carries, and what a published list holds. It is a leaf
// package (the standard library and jwx only) so that a service that only
// verifies keyd's tokens compiles it and nothing of the daemon; package
// signer, on the daemon's side, uses it too.
package tokencheck

import (
	"errors"
	"fmt"
	"strings"
)

// ErrInvalidToken means a token did not verify; the message says why and
// is safe to show the caller.
var ErrInvalidToken = errors.New("invalid token")

// Why a token did not verify: stable codes that API answers, metrics and
// audit records carry, so callers can tell "expired, refresh it" from
// "forged, alert someone". Checks run in this order (structure, algorithm,
// key, signature, claims), so a forged token learns nothing of its claims.
const (
	CodeMalformed      = "malformed_token"       // not a compact JWS of one signature with JSON claims
	CodeAlgorithm      = "algorithm_not_allowed" // alg is not the key set's
	CodeUnknownKey     = "unknown_key"           // no key of the set has that kid, or it is revoked
	CodeSignature      = "invalid_signature"     // the signature does not match
	CodeExpired        = "token_expired"         // exp has passed (beyond the leeway)
	CodeNotYetValid    = "token_not_yet_valid"   // nbf is in the future (beyond the leeway)
	CodeIssuedInFuture = "issued_in_future"      // iat is in the future (beyond the leeway)
	CodeMissingClaim   = "missing_claim"         // a required claim (exp, or one the policy names) is absent
	CodeIssuer         = "invalid_issuer"        // iss is not the expected issuer
	CodeAudience       = "invalid_audience"      // aud holds none of the expected audiences
	CodeSubject        = "invalid_subject"       // sub is not the expected subject
	CodeType           = "invalid_type"          // the header's typ is not the expected one
	CodeRevoked        = "token_revoked"         // the token (its jti, or its subject before a cut-off) is revoked
)

// VerifyCodes lists every verification failure code.
var VerifyCodes = []string{CodeMalformed, CodeAlgorithm, CodeUnknownKey, CodeSignature, CodeExpired, CodeNotYetValid,
	CodeIssuedInFuture, CodeMissingClaim, CodeIssuer, CodeAudience, CodeSubject, CodeType, CodeRevoked}

// Error carries a message that is safe to show to API callers, wrapping one
// of the sentinels above. Code is set for ErrInvalidToken.
type Error struct {
	Kind   error
	Code   string
	Reason string
	KID    string // the token's kid, when verification got that far
}

func (e *Error) Error() string { return e.Reason }
func (e *Error) Unwrap() error { return e.Kind }

// Reject is a verification failure of code: an *Error wrapping
// ErrInvalidToken, with a message safe to show the caller.
func Reject(code, format string, args ...any) error {
	return &Error{Kind: ErrInvalidToken, Code: code, Reason: fmt.Sprintf(format, args...)}
}

func rejected(code, format string, args ...any) error { return Reject(code, format, args...) }

// KeyID returns the kid of the token a verification failure is about, or
// "" when the token was refused before its key was looked up.
func KeyID(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.KID
	}
	return ""
}

// Code returns the verification failure code of err, or "".
func Code(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return ""
}

// Clip shortens an attacker-supplied string for an error message or a
// record.
func Clip(s string) string {
	const max = 64
	if len(s) <= max {
		return s
	}
	return strings.ToValidUTF8(s[:max], "") + fmt.Sprintf("... (%d bytes)", len(s))
}

func clip(s string) string { return Clip(s) }
