// Package records is the default token state engine: revocations as
// records of the key store itself (keystore.RecordStore: bbolt, with its
// batched commits and sealing, or Vault), one record per revoked token or
// subject, so a revocation is one small write whatever the number in
// force.
package records

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"sync"
	"time"

	"github.com/keyd-dev/keyd/keystore"
	"github.com/keyd-dev/keyd/tokenstate"
)

// Kind is the record kind of revocations.
const Kind = "revocation"

// Store keeps revocations in a keystore.RecordStore.
type Store struct {
	rs keystore.RecordStore
	// Writes to one entry take turns in this process (the
	// compare-and-swap still guards against other replicas): revoking one
	// subject from many requests at once would otherwise race on it.
	locks [64]sync.Mutex
}

// New returns the engine over rs.
func New(rs keystore.RecordStore) *Store { return &Store{rs: rs} }

func (s *Store) lock(id string) *sync.Mutex {
	h := fnv.New32a()
	h.Write([]byte(id))
	return &s.locks[h.Sum32()%uint32(len(s.locks))]
}

var _ tokenstate.Store = (*Store)(nil)

// record is a stored revocation.
type record struct {
	KeySet    string    `json:"keyset"`
	JTI       string    `json:"jti,omitempty"`
	Subject   string    `json:"sub,omitempty"`
	Before    time.Time `json:"before,omitzero"`
	ExpiresAt time.Time `json:"expires_at"`
	RevokedAt time.Time `json:"revoked_at"`
	Reason    string    `json:"reason,omitempty"`
}

func toRecord(r tokenstate.Revocation) record {
	return record{KeySet: r.KeySet, JTI: r.JTI, Subject: r.Subject, Before: r.Before.UTC(), ExpiresAt: r.Expires.UTC(), RevokedAt: r.RevokedAt.UTC(), Reason: r.Reason}
}

func (r record) revocation() tokenstate.Revocation {
	return tokenstate.Revocation{KeySet: r.KeySet, JTI: r.JTI, Subject: r.Subject, Before: r.Before, Expires: r.ExpiresAt, RevokedAt: r.RevokedAt, Reason: r.Reason}
}

// PutRevocation implements tokenstate.Store. A token's revocation is
// appended without a read, under an id that begins with when it was made:
// the store's index grows at its end, so the write touches the same few
// pages whatever the number in force (a B-tree insert at a random place
// would dirty a page of its own). A token revoked again gets a second
// record; Revocations returns both, merged by whoever reads them. A
// subject's revocation is merged in place (later cut-offs win), as
// subjects are few and their entry must be one.
func (s *Store) PutRevocation(ctx context.Context, r tokenstate.Revocation) (tokenstate.Revocation, error) {
	if !r.IsSubject() {
		rec, err := tokenRecord(r)
		if err != nil {
			return tokenstate.Revocation{}, err
		}
		_, err = s.rs.PutRecord(ctx, Kind, rec)
		if errors.Is(err, keystore.ErrConflict) {
			err = nil // the same revocation, in the same nanosecond: already there
		}
		return r, err
	}
	stored := r
	mu := s.lock(r.ID())
	mu.Lock()
	defer mu.Unlock()
	err := keystore.UpdateRecord(ctx, s.rs, Kind, r.ID(), func(cur *keystore.Record) ([]byte, time.Time, error) {
		stored = r
		if cur != nil {
			var old record
			if err := json.Unmarshal(cur.Data, &old); err != nil {
				return nil, time.Time{}, fmt.Errorf("%w: revocation %s: %v", keystore.ErrCorrupt, cur.ID, err)
			}
			stored = old.revocation().Merge(r)
		}
		data, err := json.Marshal(toRecord(stored))
		return data, stored.Expires, err
	})
	return stored, err
}

// tokenRecord is the record of a token's revocation: its id begins with
// when it was made.
func tokenRecord(r tokenstate.Revocation) (*keystore.Record, error) {
	at := r.RevokedAt
	if at.IsZero() {
		at = time.Now()
	}
	data, err := json.Marshal(toRecord(r))
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256([]byte(r.JTI))
	id := fmt.Sprintf("%s.t.%016x.%s", r.KeySet, uint64(at.UnixNano()), base64.RawURLEncoding.EncodeToString(sum[:12]))
	return &keystore.Record{ID: id, Data: data, Expires: r.Expires}, nil
}

// PutRevocations implements tokenstate.BulkPutter: the tokens' entries in
// one write where the record store can (keystore.PutRecordsOver; an entry
// of the same token made at the same time is the same entry), subjects
// merged one by one.
func (s *Store) PutRevocations(ctx context.Context, rs []tokenstate.Revocation) error {
	recs := make([]*keystore.Record, 0, len(rs))
	for _, r := range rs {
		if r.IsSubject() { // few: merged one by one
			if _, err := s.PutRevocation(ctx, r); err != nil {
				return err
			}
			continue
		}
		rec, err := tokenRecord(r)
		if err != nil {
			return err
		}
		recs = append(recs, rec)
	}
	return keystore.PutRecordsOver(ctx, s.rs, Kind, recs)
}

// Revocations implements tokenstate.Store: records are decoded and
// passed on as the store reads them (on every processor, from bbolt).
func (s *Store) Revocations(ctx context.Context, add func(tokenstate.Revocation)) error {
	return keystore.EachRecord(ctx, s.rs, Kind, func(rec *keystore.Record) error {
		var r record
		if err := json.Unmarshal(rec.Data, &r); err != nil {
			return fmt.Errorf("%w: revocation %s: %v", keystore.ErrCorrupt, rec.ID, err)
		}
		add(r.revocation())
		return nil
	})
}

// PruneRevocations implements tokenstate.Store.
func (s *Store) PruneRevocations(ctx context.Context, now time.Time) (int, error) {
	recs, err := s.rs.ListRecords(ctx, Kind)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, rec := range recs {
		var r record
		if json.Unmarshal(rec.Data, &r) != nil || !r.ExpiresAt.Before(now) {
			continue
		}
		if err := s.rs.DeleteRecord(ctx, Kind, rec.ID); err != nil && !errors.Is(err, keystore.ErrNotFound) {
			return n, err
		}
		n++
	}
	return n, nil
}
