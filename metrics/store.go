package metrics

import (
	"context"
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/keyd-dev/keyd/keystore"
)

// Store wraps s so that every operation's duration and failure is counted,
// the records' too (op get_record, put_record, delete_record,
// list_records: the refresh logins and revocations of the key store's
// token state). Not-found answers and version conflicts are part of the
// contract, not failures.
func (m *Metrics) Store(s keystore.Store) keystore.Store {
	if m == nil {
		return s
	}
	st := &store{Store: s}
	for i, op := range []string{"get", "list", "put", "get_record", "put_record", "delete_record", "list_records"} {
		st.ops[i] = storeOp{m.storeDuration.WithLabelValues(op), m.storeErrors.WithLabelValues(op)}
	}
	return st
}

type storeOp struct {
	duration prometheus.Observer
	errors   prometheus.Counter
}

type store struct {
	keystore.Store
	ops [7]storeOp // get, list, put, then the records' four
}

func (s *store) observe(op int, start time.Time, err error) {
	s.ops[op].duration.Observe(time.Since(start).Seconds())
	if err != nil && !errors.Is(err, keystore.ErrNotFound) && !errors.Is(err, keystore.ErrConflict) {
		s.ops[op].errors.Inc()
	}
}

func (s *store) Get(ctx context.Context, name string) (*keystore.KeySet, error) {
	start := time.Now()
	ks, err := s.Store.Get(ctx, name)
	s.observe(0, start, err)
	return ks, err
}

func (s *store) List(ctx context.Context) ([]*keystore.KeySet, error) {
	start := time.Now()
	out, err := s.Store.List(ctx)
	s.observe(1, start, err)
	return out, err
}

func (s *store) Put(ctx context.Context, ks *keystore.KeySet) (*keystore.KeySet, error) {
	start := time.Now()
	out, err := s.Store.Put(ctx, ks)
	s.observe(2, start, err)
	return out, err
}

func (s *store) GetRecord(ctx context.Context, kind, id string) (*keystore.Record, error) {
	start := time.Now()
	r, err := s.Store.GetRecord(ctx, kind, id)
	s.observe(3, start, err)
	return r, err
}

func (s *store) PutRecord(ctx context.Context, kind string, r *keystore.Record) (*keystore.Record, error) {
	start := time.Now()
	out, err := s.Store.PutRecord(ctx, kind, r)
	s.observe(4, start, err)
	return out, err
}

func (s *store) DeleteRecord(ctx context.Context, kind, id string) error {
	start := time.Now()
	err := s.Store.DeleteRecord(ctx, kind, id)
	s.observe(5, start, err)
	return err
}

func (s *store) ListRecords(ctx context.Context, kind string) ([]*keystore.Record, error) {
	start := time.Now()
	out, err := s.Store.ListRecords(ctx, kind)
	s.observe(6, start, err)
	return out, err
}

// EachRecord keeps the store's own scan (keystore.RecordScanner), counted
// as list_records.
func (s *store) EachRecord(ctx context.Context, kind string, fn func(*keystore.Record) error) error {
	start := time.Now()
	err := keystore.EachRecord(ctx, s.Store, kind, fn)
	s.observe(6, start, err)
	return err
}

// PutRecordsOver keeps the store's own bulk write (keystore.RecordBulkWriter),
// counted as put_record.
func (s *store) PutRecordsOver(ctx context.Context, kind string, recs []*keystore.Record) error {
	start := time.Now()
	err := keystore.PutRecordsOver(ctx, s.Store, kind, recs)
	s.observe(4, start, err)
	return err
}

// ExpiresRecords is the store's (keystore.RecordExpirer).
func (s *store) ExpiresRecords() bool { return keystore.ExpiresRecords(s.Store) }
