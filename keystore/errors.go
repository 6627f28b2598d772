package keystore

import "errors"

var (
	// ErrNotFound is returned by a Store when a key set does not exist.
	ErrNotFound = errors.New("key set not found")

	// ErrConflict is returned by Store.Put when the stored version is not
	// the version the write was based on (another writer got there first,
	// or the key set already exists for a create).
	ErrConflict = errors.New("key set was changed concurrently")

	// ErrUnavailable wraps a backend fault (I/O, network); the operation may
	// succeed later.
	ErrUnavailable = errors.New("key store unavailable")

	// ErrUnsupportedAlgorithm is returned for "none" and any algorithm keyd
	// does not sign with.
	ErrUnsupportedAlgorithm = errors.New("unsupported algorithm")

	// ErrKeyNotFound is returned when a kid is not part of a key set.
	ErrKeyNotFound = errors.New("key not found")

	// ErrInvalidTransition is returned when a lifecycle transition does not
	// apply to the key set's current state (revoking a revoked key, rotating
	// without a pending key).
	ErrInvalidTransition = errors.New("invalid key transition")

	// ErrCorrupt is returned when a stored key set breaks the invariants
	// (no active key, two active keys, material that does not parse).
	ErrCorrupt = errors.New("key set is inconsistent")

	// ErrNoChange may be returned by an Update function to leave the key
	// set as it is; Update then returns the current key set and no error.
	ErrNoChange = errors.New("no change")

	// ErrInvalidPolicy is returned when a request would widen a key set's
	// configured verify policy.
	ErrInvalidPolicy = errors.New("invalid verify policy")

	// ErrRevocationLimit is returned when a key set already has as many
	// revocations in force as it may hold.
	ErrRevocationLimit = errors.New("revocation limit reached")
)
