package refresh_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyd-dev/keyd/backends/file"
	"github.com/keyd-dev/keyd/keystore"
	"github.com/keyd-dev/keyd/refresh"
)

// lostAnswers is a real store whose writes land but whose answers are
// lost (ErrUnavailable), as a stalled Redis's, and whose deletes fail
// until up is set.
type lostAnswers struct {
	*file.Store
	up      atomic.Bool
	deletes chan string
}

func (s *lostAnswers) PutRecord(ctx context.Context, kind string, r *keystore.Record) (*keystore.Record, error) {
	if _, err := s.Store.PutRecord(ctx, kind, r); err != nil {
		return nil, err
	}
	return nil, fmt.Errorf("%w: redis did not answer in time", keystore.ErrUnavailable)
}

func (s *lostAnswers) DeleteRecord(ctx context.Context, kind, id string) error {
	if !s.up.Load() {
		return fmt.Errorf("%w: still down", keystore.ErrUnavailable)
	}
	err := s.Store.DeleteRecord(ctx, kind, id)
	s.deletes <- id
	return err
}

// TestOrphanLoginsForgotten: a login whose creation answered "store
// unavailable" but landed is deleted once the store is back (twice: a
// write queued behind the outage may land after the first delete), so
// no login is left that nobody holds the token of.
func TestOrphanLoginsForgotten(t *testing.T) {
	_, sg, c, store := setup(t)
	lost := &lostAnswers{Store: store, deletes: make(chan string, 8)}
	svc := refresh.New(lost, sg, c.Now, func(string) (refresh.Settings, bool) { return refresh.Settings{TTL: time.Hour}, true })
	var waits atomic.Int64
	svc.SetSleep(func(ctx context.Context, d time.Duration) bool { // no time passes; the store comes back after a few tries
		if waits.Add(1) == 3 {
			lost.up.Store(true)
		}
		return ctx.Err() == nil
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if _, err := svc.Issue(ctx, "app", claims); !errors.Is(err, keystore.ErrUnavailable) {
		t.Fatalf("Issue = %v, want the store's unavailability", err)
	}
	recs, _ := store.ListRecords(ctx, refresh.Kind)
	if len(recs) != 1 {
		t.Fatalf("%d logins after the lost answer, want the one that landed", len(recs))
	}
	done := make(chan struct{})
	go func() { svc.ForgetOrphans(ctx); close(done) }()
	next := func() string {
		select {
		case id := <-lost.deletes:
			return id
		case <-time.After(10 * time.Second): // a bound on a failure, not a wait for time to pass
			t.Fatal("the orphan login was not deleted")
			return ""
		}
	}
	first, second := next(), next()
	if first != recs[0].ID || second != first {
		t.Fatalf("deleted %q then %q, want %q twice", first, second, recs[0].ID)
	}
	if recs, _ := store.ListRecords(ctx, refresh.Kind); len(recs) != 0 {
		t.Fatalf("%d orphan logins left", len(recs))
	}
	cancel()
	<-done
}
