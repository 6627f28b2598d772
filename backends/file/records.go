package file

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"

	bolt "go.etcd.io/bbolt"

	"github.com/keyd-dev/keyd/keystore"
)

// Records live in records/<kind>/<id>: an 8-byte big-endian version, then
// the data sealed with AES-256-GCM, bound to kind and id. Each write is one
// fsynced transaction, like a key set's.

func recordAAD(kind, id string) []byte { return []byte("keyd/v1/record/" + kind + "/" + id) }

// GetRecord implements keystore.RecordStore.
func (s *Store) GetRecord(ctx context.Context, kind, id string) (*keystore.Record, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var out *keystore.Record
	err := s.db.View(func(tx *bolt.Tx) error {
		var raw []byte
		if b := tx.Bucket(bucketRecords).Bucket([]byte(kind)); b != nil {
			raw = b.Get([]byte(id))
		}
		if raw == nil {
			return fmt.Errorf("%w: %s %s", keystore.ErrNotFound, kind, id)
		}
		var err error
		out, err = s.decodeRecord(kind, id, raw)
		return err
	})
	return out, s.wrap(err)
}

// PutRecord implements keystore.RecordStore.
func (s *Store) PutRecord(ctx context.Context, kind string, r *keystore.Record) (*keystore.Record, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if kind == "" || r.ID == "" {
		return nil, errors.New("a record needs a kind and an id")
	}
	out := &keystore.Record{ID: r.ID, Data: append([]byte(nil), r.Data...)}
	err := s.db.Batch(func(tx *bolt.Tx) error { // as Put: safe to run again
		b, err := tx.Bucket(bucketRecords).CreateBucketIfNotExists([]byte(kind))
		if err != nil {
			return err
		}
		var current uint64
		if raw := b.Get([]byte(r.ID)); raw != nil {
			if len(raw) < 8 {
				return fmt.Errorf("%w: record %s %s is truncated", keystore.ErrCorrupt, kind, r.ID)
			}
			current = binary.BigEndian.Uint64(raw)
		}
		if current != r.Version {
			return fmt.Errorf("%w: record %s %s is at version %d, write was based on %d", keystore.ErrConflict, kind, r.ID, current, r.Version)
		}
		out.Version = current + 1
		sealed, err := s.seal(r.Data, recordAAD(kind, r.ID))
		if err != nil {
			return err
		}
		return b.Put([]byte(r.ID), append(binary.BigEndian.AppendUint64(nil, out.Version), sealed...))
	})
	if err != nil {
		return nil, s.wrap(err)
	}
	return out, nil
}

// DeleteRecord implements keystore.RecordStore.
func (s *Store) DeleteRecord(ctx context.Context, kind, id string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return s.wrap(s.db.Update(func(tx *bolt.Tx) error {
		if b := tx.Bucket(bucketRecords).Bucket([]byte(kind)); b != nil {
			return b.Delete([]byte(id))
		}
		return nil
	}))
}

// ListRecords implements keystore.RecordStore.
func (s *Store) ListRecords(ctx context.Context, kind string) ([]*keystore.Record, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var out []*keystore.Record
	err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketRecords).Bucket([]byte(kind))
		if b == nil {
			return nil
		}
		return b.ForEach(func(k, raw []byte) error {
			r, err := s.decodeRecord(kind, string(k), raw)
			if err != nil {
				return err
			}
			out = append(out, r)
			return nil
		})
	})
	return out, s.wrap(err)
}

// EachRecord implements keystore.RecordScanner: one read transaction, the
// raw records handed in chunks to a decoder per processor (opening and
// decoding a million records is CPU work), each passed to fn.
func (s *Store) EachRecord(ctx context.Context, kind string, fn func(*keystore.Record) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	type raw struct{ id, v []byte }
	chunks := make(chan []raw, runtime.GOMAXPROCS(0))
	var (
		once     sync.Once
		firstErr error
		failed   atomic.Bool
		wg       sync.WaitGroup
	)
	fail := func(err error) {
		once.Do(func() { firstErr = err })
		failed.Store(true)
	}
	for range runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			for chunk := range chunks {
				for _, r := range chunk {
					if failed.Load() {
						break
					}
					rec, err := s.decodeRecord(kind, string(r.id), r.v)
					if err == nil {
						err = fn(rec)
					}
					if err != nil {
						fail(err)
					}
				}
			}
		})
	}
	err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketRecords).Bucket([]byte(kind))
		if b == nil {
			return nil
		}
		chunk := make([]raw, 0, 1024)
		err := b.ForEach(func(k, v []byte) error {
			if err := ctx.Err(); err != nil {
				return err
			}
			if failed.Load() {
				return errStopped
			}
			// bbolt owns k and v only for the transaction: copied.
			chunk = append(chunk, raw{append([]byte(nil), k...), append([]byte(nil), v...)})
			if len(chunk) == cap(chunk) {
				chunks <- chunk
				chunk = make([]raw, 0, 1024)
			}
			return nil
		})
		if len(chunk) > 0 && err == nil {
			chunks <- chunk
		}
		return err
	})
	close(chunks)
	wg.Wait()
	if firstErr != nil {
		return firstErr
	}
	return s.wrap(err)
}

var errStopped = errors.New("stopped")

// decodeRecord copies a record out of raw, which bbolt owns only for the
// transaction.
func (s *Store) decodeRecord(kind, id string, raw []byte) (*keystore.Record, error) {
	if len(raw) < 8 {
		return nil, fmt.Errorf("%w: record %s %s is truncated", keystore.ErrCorrupt, kind, id)
	}
	data, err := s.open(raw[8:], recordAAD(kind, id))
	if err != nil {
		return nil, fmt.Errorf("%w: record %s %s does not open", keystore.ErrCorrupt, kind, id)
	}
	return &keystore.Record{ID: id, Data: data, Version: binary.BigEndian.Uint64(raw)}, nil
}

// PutRecordsOver implements keystore.RecordBulkWriter: every record in one
// transaction (one fsync), each over the stored one of its id.
func (s *Store) PutRecordsOver(ctx context.Context, kind string, recs []*keystore.Record) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	sealed := make([][]byte, len(recs)) // sealed before the transaction: it is CPU work
	for i, r := range recs {
		if kind == "" || r.ID == "" {
			return errors.New("a record needs a kind and an id")
		}
		v, err := s.seal(r.Data, recordAAD(kind, r.ID))
		if err != nil {
			return err
		}
		sealed[i] = v
	}
	return s.wrap(s.db.Update(func(tx *bolt.Tx) error {
		b, err := tx.Bucket(bucketRecords).CreateBucketIfNotExists([]byte(kind))
		if err != nil {
			return err
		}
		for i, r := range recs {
			var current uint64
			if raw := b.Get([]byte(r.ID)); len(raw) >= 8 {
				current = binary.BigEndian.Uint64(raw)
			}
			if err := b.Put([]byte(r.ID), append(binary.BigEndian.AppendUint64(nil, current+1), sealed[i]...)); err != nil {
				return err
			}
		}
		return nil
	}))
}
