// Package sealed seals the records keyd keeps in a store that someone else
// can write (Redis): refresh token logins, subject cut-offs, and (through
// Entries) revocation entries. Each
// record's data is sealed with AES-256-GCM under a key kept in keyd's key
// store (sealed there under the master key on bbolt, in Vault's KV on
// Vault), with the record's kind and id as associated data, so that
//   - a Redis reader learns no refresh secret, claim or subject, and cannot
//     compute any login's next refresh token;
//   - a Redis writer cannot mint a login, change a login's claims, move a
//     record to another id, or slip in an unsealed record as "old": such
//     a record is refused (keyd_token_state_rejected_total) and read as
//     absent, so its refresh token is invalid.
//
// What a Redis writer can still do: delete records (logging users out,
// lifting subject cut-offs kept only there) and put back an earlier sealed
// state of the same record (a spent refresh generation working again until
// the login's next refresh). Redis must stay private to keyd.
//
// It is a package of its own because it is one rule applied to any
// keystore.RecordStore, whatever engine stores the records.
package sealed

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/keyd-dev/keyd/keystore"
)

// magic opens every sealed record's data: a format version, so that a
// later format can be told apart.
var magic = []byte("ks1:")

// KeyKind and KeyID name the record in the key store that holds the
// sealing key.
const (
	KeyKind = "tokenstate-seal"
	KeyID   = "key"
)

// Records seals the data of an inner RecordStore's records.
type Records struct {
	inner    keystore.RecordStore
	aead     cipher.AEAD
	rejected func(kind string)
}

var _ keystore.RecordStore = (*Records)(nil)

// New seals inner's records with the 32-byte key; rejected (nil: none) is
// told of each record refused as forged.
func New(inner keystore.RecordStore, key []byte, rejected func(kind string)) (*Records, error) {
	if len(key) != 32 {
		return nil, fmt.Errorf("sealed: the key has %d bytes, want 32", len(key))
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	return &Records{inner: inner, aead: aead, rejected: rejected}, nil
}

// ForgedError is a record that keyd did not seal (forged, altered, moved
// from another id, or unsealed): read as absent. It wraps
// keystore.ErrNotFound and carries the stored version, so that
// keystore.UpdateRecord overwrites it rather than conflicting with it.
type ForgedError struct {
	Kind, ID string
	Version  uint64
}

func (e *ForgedError) Error() string {
	return fmt.Sprintf("record %s %s was not sealed by keyd (forged or altered in the token state store): refused", e.Kind, e.ID)
}

// Unwrap makes a forged record read as a missing one.
func (e *ForgedError) Unwrap() error { return keystore.ErrNotFound }

// StoredVersion is the version of the refused record in the store.
func (e *ForgedError) StoredVersion() uint64 { return e.Version }

func aad(kind, id string) []byte { return []byte("keyd-record/v1\x00" + kind + "\x00" + id) }

func (s *Records) seal(kind, id string, plain []byte) []byte {
	nonce := make([]byte, s.aead.NonceSize(), len(magic)+s.aead.NonceSize()+len(plain)+s.aead.Overhead())
	_, _ = rand.Read(nonce)
	out := append(append([]byte(nil), magic...), nonce...)
	return s.aead.Seal(out, nonce, plain, aad(kind, id))
}

// open returns the record with its data opened, or a *ForgedError.
func (s *Records) open(kind string, r *keystore.Record) (*keystore.Record, error) {
	plain, ok := s.openData(kind, r.ID, r.Data)
	if !ok {
		if s.rejected != nil {
			s.rejected(kind)
		}
		return nil, &ForgedError{Kind: kind, ID: r.ID, Version: r.Version}
	}
	out := *r
	out.Data = plain
	return &out, nil
}

func (s *Records) openData(kind, id string, data []byte) ([]byte, bool) {
	rest, ok := bytes.CutPrefix(data, magic)
	if !ok || len(rest) < s.aead.NonceSize()+s.aead.Overhead() {
		return nil, false
	}
	n := s.aead.NonceSize()
	plain, err := s.aead.Open(nil, rest[:n], rest[n:], aad(kind, id))
	return plain, err == nil
}

// GetRecord implements keystore.RecordStore.
func (s *Records) GetRecord(ctx context.Context, kind, id string) (*keystore.Record, error) {
	r, err := s.inner.GetRecord(ctx, kind, id)
	if err != nil {
		return nil, err
	}
	return s.open(kind, r)
}

// PutRecord implements keystore.RecordStore.
func (s *Records) PutRecord(ctx context.Context, kind string, r *keystore.Record) (*keystore.Record, error) {
	sealed := *r
	sealed.Data = s.seal(kind, r.ID, r.Data)
	out, err := s.inner.PutRecord(ctx, kind, &sealed)
	if err != nil {
		return nil, err
	}
	out.Data = append([]byte(nil), r.Data...)
	return out, nil
}

// DeleteRecord implements keystore.RecordStore.
func (s *Records) DeleteRecord(ctx context.Context, kind, id string) error {
	return s.inner.DeleteRecord(ctx, kind, id)
}

// ListRecords implements keystore.RecordStore: forged records are left
// out (and counted).
func (s *Records) ListRecords(ctx context.Context, kind string) ([]*keystore.Record, error) {
	recs, err := s.inner.ListRecords(ctx, kind)
	if err != nil {
		return nil, err
	}
	out := recs[:0]
	for _, r := range recs {
		if o, err := s.open(kind, r); err == nil {
			out = append(out, o)
		}
	}
	return out, nil
}

// ExpiresRecords implements keystore.RecordExpirer as the inner store does.
func (s *Records) ExpiresRecords() bool { return keystore.ExpiresRecords(s.inner) }

// Migrate seals, once, the records of kinds that inner holds unsealed
// (written before sealing): each rewritten with compare-and-swap at its
// version. Records already sealed are left; a record whose data is
// neither sealed nor what keyd wrote is still sealed, so Migrate must run
// only before anyone could write Redis under sealing: keyd runs it once
// per store and remembers that in its key store (see Key). It returns how
// many records it sealed.
func (s *Records) Migrate(ctx context.Context, kinds ...string) (int, error) {
	n := 0
	for _, kind := range kinds {
		recs, err := s.inner.ListRecords(ctx, kind)
		if err != nil {
			return n, err
		}
		for _, r := range recs {
			if bytes.HasPrefix(r.Data, magic) {
				continue
			}
			next := *r
			next.Data = s.seal(kind, r.ID, r.Data)
			if _, err := s.inner.PutRecord(ctx, kind, &next); err != nil && !errors.Is(err, keystore.ErrConflict) {
				return n, err
			}
			n++
		}
	}
	return n, nil
}

// keyRecord is the sealing key as the key store keeps it, with the token
// state stores whose older records were sealed.
type keyRecord struct {
	Key      []byte    `json:"key"`
	Migrated []string  `json:"migrated,omitempty"` // token state stores sealed once (see Migrate)
	Created  time.Time `json:"created"`
}

// Key returns the sealing key kept in ks (made at the first call, by
// whichever replica gets there first: derived from the key store's own key
// where it has one, keystore.KeyDeriver, else random) and whether the token state store
// called target has had its older records sealed already.
func Key(ctx context.Context, ks keystore.RecordStore, target string) (key []byte, migrated bool, err error) {
	var kr keyRecord
	err = keystore.UpdateRecord(ctx, ks, KeyKind, KeyID, func(cur *keystore.Record) ([]byte, time.Time, error) {
		if cur != nil {
			if err := json.Unmarshal(cur.Data, &kr); err != nil || len(kr.Key) != 32 {
				return nil, time.Time{}, fmt.Errorf("%w: the token state's sealing key in the key store does not parse", keystore.ErrCorrupt)
			}
			return nil, time.Time{}, keystore.ErrNoChange
		}
		kr = keyRecord{Key: make([]byte, 32), Created: time.Now().UTC()}
		if d, ok := ks.(keystore.KeyDeriver); ok {
			// Replicas of their own files (bbolt) sharing one Redis and one
			// master key seal alike; kept, the key outlives a master key
			// rotation, which seals this record again.
			k, err := d.DeriveKey("tokenstate-seal/v1")
			if err != nil {
				return nil, time.Time{}, err
			}
			kr.Key = k
		} else {
			_, _ = rand.Read(kr.Key)
		}
		data, err := json.Marshal(kr)
		return data, time.Time{}, err
	})
	if err != nil {
		return nil, false, err
	}
	for _, t := range kr.Migrated {
		if t == target {
			return kr.Key, true, nil
		}
	}
	return kr.Key, false, nil
}

// Migrated records in ks that the token state store called target has
// had its older records sealed.
func Migrated(ctx context.Context, ks keystore.RecordStore, target string) error {
	return keystore.UpdateRecord(ctx, ks, KeyKind, KeyID, func(cur *keystore.Record) ([]byte, time.Time, error) {
		var kr keyRecord
		if cur == nil || json.Unmarshal(cur.Data, &kr) != nil {
			return nil, time.Time{}, fmt.Errorf("%w: the token state's sealing key is missing from the key store", keystore.ErrCorrupt)
		}
		for _, t := range kr.Migrated {
			if t == target {
				return nil, time.Time{}, keystore.ErrNoChange
			}
		}
		kr.Migrated = append(kr.Migrated, target)
		data, err := json.Marshal(kr)
		return data, time.Time{}, err
	})
}

// Entries seals single values of a kind that an engine stores itself (the
// Redis engine's revocation entries, merged by keyd before they are
// written), with the same key and rule as the records: bound to kind and
// id, refused when keyd did not seal them. It is tokenstate/redis's Sealer.
type Entries struct {
	r    *Records
	kind string
}

// Entries returns the sealer of values of kind.
func (s *Records) Entries(kind string) *Entries { return &Entries{r: s, kind: kind} }

// Seal returns the stored form of plain, the value of entry id.
func (e *Entries) Seal(id string, plain []byte) []byte { return e.r.seal(e.kind, id, plain) }

// Open returns the value keyd sealed as entry id, false for anything else.
func (e *Entries) Open(id string, stored []byte) ([]byte, bool) {
	return e.r.openData(e.kind, id, stored)
}
