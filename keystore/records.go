package keystore

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"golang.org/x/sync/errgroup"
)

// Record is a small piece of state that is not a key set (a refresh token
// family), stored by kind and id with its own compare-and-swap version.
type Record struct {
	ID      string
	Data    []byte // opaque to the store; sealed at rest where the store seals key material
	Version uint64 // 0: not stored yet
	// Expires, when set, lets a store that expires data itself (Redis)
	// drop the record then; the others keep it until it is deleted.
	Expires time.Time
}

// RecordStore keeps records: what changes often and independently of
// anything else, so it must not share a key set's single compare-and-swap
// version. Every Store is one; Redis's token state is one too.
// Implementations follow Store's contract: safe for concurrent use (and by
// several processes where shared), honour ctx, wrap backend faults in
// ErrUnavailable, and return copies the caller owns.
type RecordStore interface {
	// GetRecord returns the record, or an error wrapping ErrNotFound.
	GetRecord(ctx context.Context, kind, id string) (*Record, error)

	// PutRecord writes r if the stored version equals r.Version (0: the
	// record must not exist), returning it with its new, greater version,
	// or an error wrapping ErrConflict having written nothing.
	PutRecord(ctx context.Context, kind string, r *Record) (*Record, error)

	// DeleteRecord removes the record; a missing record is not an error.
	DeleteRecord(ctx context.Context, kind, id string) error

	// ListRecords returns every record of a kind.
	ListRecords(ctx context.Context, kind string) ([]*Record, error)
}

// RecordExpirer is an optional capability of a RecordStore that deletes
// each record itself at its Expires (Redis): nothing needs to sweep its
// records, so sweeps skip it.
type RecordExpirer interface {
	ExpiresRecords() bool
}

// ExpiresRecords reports whether s deletes records at their Expires
// itself.
func ExpiresRecords(s RecordStore) bool {
	e, ok := s.(RecordExpirer)
	return ok && e.ExpiresRecords()
}

// RecordScanner is an optional capability of a RecordStore: every record
// of a kind passed to fn as it is read, never all in memory at once, fn
// possibly called from several goroutines at once (a million revocations
// load at start on every processor). The first error fn returns stops it.
type RecordScanner interface {
	EachRecord(ctx context.Context, kind string, fn func(*Record) error) error
}

// EachRecord calls fn with every record of a kind of s: as s streams them
// if it can (RecordScanner), else from its list.
func EachRecord(ctx context.Context, s RecordStore, kind string, fn func(*Record) error) error {
	if sc, ok := s.(RecordScanner); ok {
		return sc.EachRecord(ctx, kind, fn)
	}
	recs, err := s.ListRecords(ctx, kind)
	if err != nil {
		return err
	}
	for _, r := range recs {
		if err := fn(r); err != nil {
			return err
		}
	}
	return nil
}

// StoredVersioner is an error of a GetRecord that reads a stored record as
// absent (one refused as forged): the version it has in the store, which
// a write replacing it must be based on.
type StoredVersioner interface {
	error
	StoredVersion() uint64
}

// UpdateRecord changes a record with compare-and-swap: fn gets the stored
// record (nil when there is none) and returns the new data and expiry, or
// ErrNoChange to leave it as it is. fn may run more than once, on
// conflicts with concurrent writers.
func UpdateRecord(ctx context.Context, s RecordStore, kind, id string, fn func(cur *Record) ([]byte, time.Time, error)) error {
	var lastErr error
	for attempt := range MaxUpdateAttempts {
		cur, err := s.GetRecord(ctx, kind, id)
		var stored uint64 // a record read as absent may still hold a version (see StoredVersioner)
		if errors.Is(err, ErrNotFound) {
			if sv, ok := errors.AsType[StoredVersioner](err); ok {
				stored = sv.StoredVersion()
			}
			cur, err = nil, nil
		}
		if err != nil {
			return err
		}
		data, expires, err := fn(cur)
		if errors.Is(err, ErrNoChange) {
			return nil
		}
		if err != nil {
			return err
		}
		next := &Record{ID: id, Data: data, Expires: expires, Version: stored}
		if cur != nil {
			next.Version = cur.Version
		}
		_, err = s.PutRecord(ctx, kind, next)
		if !errors.Is(err, ErrConflict) {
			return err
		}
		lastErr = err
		// Writers racing on one record: a random pause spreads them out.
		time.Sleep(time.Duration(rand.Int64N(int64(attempt+1) * int64(time.Millisecond))))
	}
	return fmt.Errorf("update %s record %s: gave up after %d attempts: %w", kind, id, MaxUpdateAttempts, lastErr)
}

// RecordBulkWriter is an optional capability of a RecordStore: many
// records of a kind written at once (bbolt: in one transaction, where one
// by one each would be a transaction of its own), each over whatever is
// stored under its id. A restore writes a million records with it.
type RecordBulkWriter interface {
	PutRecordsOver(ctx context.Context, kind string, recs []*Record) error
}

// PutRecordsOver writes recs over what s stores under their ids: at once
// where s can (RecordBulkWriter), else each with UpdateRecord, 64 at a
// time (a store over the network answers each in a round trip).
func PutRecordsOver(ctx context.Context, s RecordStore, kind string, recs []*Record) error {
	if b, ok := s.(RecordBulkWriter); ok {
		return b.PutRecordsOver(ctx, kind, recs)
	}
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(64)
	for _, r := range recs {
		g.Go(func() error {
			return UpdateRecord(ctx, s, kind, r.ID, func(*Record) ([]byte, time.Time, error) {
				return r.Data, r.Expires, nil
			})
		})
	}
	return g.Wait()
}

// KeyDeriver is an optional capability of a store that holds a key of its
// own (bbolt's master key): keys for other purposes derived from it, the
// same in every process that holds that key (replicas, each with its own
// file and the same master key).
type KeyDeriver interface {
	DeriveKey(purpose string) ([]byte, error)
}
