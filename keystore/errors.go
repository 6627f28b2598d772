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

	// ErrNoPrivateKey is returned when a signing key is asked of a key that
	// has only its public half (an imported public key).
	ErrNoPrivateKey = errors.New("no private key")

	// ErrInvalidImport is returned when a key cannot be imported into a key
	// set as asked (it does not fit the algorithm, is too weak, has no
	// private half for a signing state); the message says why.
	ErrInvalidImport = errors.New("key cannot be imported")

	// ErrKeyExists is returned when an imported key's kid is already in the
	// key set.
	ErrKeyExists = errors.New("kid already in the key set")

	// ErrRevocationLimit is returned when a key set already has as many
	// revocations in force as it may hold.
	ErrRevocationLimit = errors.New("revocation limit reached")
)
