package metrics

import (
	"context"
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/keyd-dev/keyd/keystore"
)

// Store wraps s so that every operation's duration and failure is counted.
// Not-found answers and version conflicts are part of the contract, not
// failures.
func (m *Metrics) Store(s keystore.Store) keystore.Store {
	if m == nil {
		return s
	}
	st := &store{Store: s}
	for i, op := range []string{"get", "list", "put"} {
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
	ops [3]storeOp // get, list, put
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
