package signer

import (
	"errors"
	"fmt"
)

var (
	// ErrUnknownKeySet means no key set of that name is loaded.
	ErrUnknownKeySet = errors.New("unknown key set")
	// ErrInvalidRequest means the sign request itself is wrong (ttl,
	// claims); the message says how and is safe to show the caller.
	ErrInvalidRequest = errors.New("invalid sign request")
	// ErrInvalidToken means a token did not verify; the message says why
	// and is safe to show the caller.
	ErrInvalidToken = errors.New("invalid token")
	// ErrInternal is a fault on keyd's side.
	ErrInternal = errors.New("internal signing error")
)

// Error carries a message that is safe to show to API callers, wrapping one
// of the sentinels above.
type Error struct {
	Kind   error
	Reason string
}

func (e *Error) Error() string { return e.Reason }
func (e *Error) Unwrap() error { return e.Kind }

func invalid(format string, args ...any) error {
	return &Error{Kind: ErrInvalidRequest, Reason: fmt.Sprintf(format, args...)}
}

func rejected(format string, args ...any) error {
	return &Error{Kind: ErrInvalidToken, Reason: fmt.Sprintf(format, args...)}
}
