package keystore

import (
	"context"
	"errors"
	"fmt"
)

// Store persists key sets and records. It is keyd's whole storage
// contract: a backend implements these methods (RecordStore's included)
// and passes keystoretest.Run and keystoretest.RunRecords.
//
// Implementations must be safe for concurrent use by several goroutines and,
// where the backend is shared (Vault), by several processes. Every method
// honours ctx cancellation where the backend can. Returned key sets belong
// to the caller: the store keeps no reference to them and they share no
// memory with it. Backend faults wrap ErrUnavailable.
type Store interface {
	// Get returns the key set called name, or an error wrapping ErrNotFound.
	Get(ctx context.Context, name string) (*KeySet, error)

	// List returns every stored key set, ordered by name.
	List(ctx context.Context) ([]*KeySet, error)

	// Put writes ks atomically if the stored key set's version equals
	// ks.Version; ks.Version 0 means the key set must not exist yet. It
	// returns the key set as stored, with its new Version, which is always
	// greater than the old one. On a version mismatch it returns an error
	// wrapping ErrConflict and writes nothing. ks must pass Check.
	//
	// A write either happens whole or not at all, whatever happens to the
	// process: a reader never sees part of a Put.
	Put(ctx context.Context, ks *KeySet) (*KeySet, error)

	// Close releases the store. Calls after Close fail.
	Close() error

	// The records of the token state and of keyd's own bookkeeping (seal
	// keys, markers): every backend keeps them.
	RecordStore
}

// MaxUpdateAttempts bounds how often Update retries on ErrConflict.
const MaxUpdateAttempts = 10

// Update applies fn to the current state of the key set called name and
// stores the result with compare-and-swap, retrying on fresh state when
// another writer got there first. fn receives a copy it may modify and
// return, and may run more than once: it must not have side effects beyond
// its result (make new keys before calling Update, not inside fn). If fn
// returns ErrNoChange, Update returns the current key set and writes
// nothing; any other error from fn is returned as is.
func Update(ctx context.Context, s Store, name string, fn func(*KeySet) (*KeySet, error)) (*KeySet, error) {
	var lastErr error
	for range MaxUpdateAttempts {
		cur, err := s.Get(ctx, name)
		if err != nil {
			return nil, err
		}
		next, err := fn(cur.Clone())
		if errors.Is(err, ErrNoChange) {
			return cur, nil
		}
		if err != nil {
			return nil, err
		}
		next.Version = cur.Version
		stored, err := s.Put(ctx, next)
		if errors.Is(err, ErrConflict) {
			lastErr = err
			continue
		}
		return stored, err
	}
	return nil, fmt.Errorf("update key set %s: gave up after %d attempts: %w", name, MaxUpdateAttempts, lastErr)
}
