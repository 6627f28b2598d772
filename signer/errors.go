package signer

import (
	"errors"
	"fmt"

	"github.com/keyd-dev/keyd/tokencheck"
)

var (
	// ErrUnknownKeySet means no key set of that name is loaded.
	ErrUnknownKeySet = errors.New("unknown key set")
	// ErrInvalidRequest means the sign request itself is wrong (ttl,
	// claims); the message says how and is safe to show the caller.
	ErrInvalidRequest = errors.New("invalid sign request")
	// ErrInvalidToken means a token did not verify; the message says why
	// and is safe to show the caller.
	ErrInvalidToken = tokencheck.ErrInvalidToken
	// ErrNoRevocationList means the key set publishes no revocation list
	// (HMAC key sets).
	ErrNoRevocationList = errors.New("no revocation list")
	// ErrInternal is a fault on keyd's side.
	ErrInternal = errors.New("internal signing error")
)

// Why a token did not verify: the codes of package tokencheck, where
// keyd's rules for a token live (the client-side verify package runs them
// too).
const (
	CodeMalformed      = tokencheck.CodeMalformed
	CodeAlgorithm      = tokencheck.CodeAlgorithm
	CodeUnknownKey     = tokencheck.CodeUnknownKey
	CodeSignature      = tokencheck.CodeSignature
	CodeExpired        = tokencheck.CodeExpired
	CodeNotYetValid    = tokencheck.CodeNotYetValid
	CodeIssuedInFuture = tokencheck.CodeIssuedInFuture
	CodeMissingClaim   = tokencheck.CodeMissingClaim
	CodeIssuer         = tokencheck.CodeIssuer
	CodeAudience       = tokencheck.CodeAudience
	CodeSubject        = tokencheck.CodeSubject
	CodeType           = tokencheck.CodeType
	CodeRevoked        = tokencheck.CodeRevoked
)

// VerifyCodes lists every verification failure code.
var VerifyCodes = tokencheck.VerifyCodes

// Error carries a message that is safe to show to API callers, wrapping one
// of the sentinels above (tokencheck.Error). Code is set for
// ErrInvalidToken.
type Error = tokencheck.Error

func invalid(format string, args ...any) error {
	return &Error{Kind: ErrInvalidRequest, Reason: fmt.Sprintf(format, args...)}
}

func rejected(code, format string, args ...any) error {
	return tokencheck.Reject(code, format, args...)
}

// KeyID returns the kid of the token a verification failure is about, or
// "" when the token was refused before its key was looked up.
func KeyID(err error) string { return tokencheck.KeyID(err) }

// Code returns the verification failure code of err, or "".
func Code(err error) string { return tokencheck.Code(err) }
