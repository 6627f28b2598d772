package rotation

// Creating key sets: at start, all at once; on a reload, one by one.

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"

	"github.com/keyd-dev/keyd/keystore"
)

// createAll makes the key sets of policies: keys are generated on as many
// goroutines as there are processors (CPU work), and each key set is
// written as soon as it is made, many writes in flight at once, so that
// the store shares commits between them (bbolt batches concurrent writes
// into one fsync; Vault's requests overlap). It stops at the first
// failure; key sets written before it stay in the store and are found at
// the next attempt.
func (m *Manager) createAll(ctx context.Context, policies []keystore.Policy) (map[string]*keystore.KeySet, error) {
	out := make(map[string]*keystore.KeySet, len(policies))
	if len(policies) == 0 {
		return out, nil
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var mu sync.Mutex
	var firstErr error
	fail := func(name string, err error) {
		mu.Lock()
		defer mu.Unlock()
		if firstErr == nil {
			firstErr = fmt.Errorf("key set %s: %w", name, err)
			cancel()
		}
	}
	work := make(chan keystore.Policy)
	writes := make(chan struct{}, maxCreateWrites) // writes in flight
	var gen, put sync.WaitGroup
	for range min(runtime.GOMAXPROCS(0), len(policies)) {
		gen.Go(func() {
			for p := range work {
				ks, err := m.generate(ctx, p)
				if err != nil {
					fail(p.Name, err)
					continue
				}
				writes <- struct{}{}
				put.Go(func() {
					defer func() { <-writes }()
					stored, err := m.storeNew(ctx, p, ks)
					if err != nil {
						fail(p.Name, err)
						return
					}
					mu.Lock()
					out[p.Name] = stored
					mu.Unlock()
				})
			}
		})
	}
	for _, p := range policies {
		if ctx.Err() != nil {
			break
		}
		work <- p
	}
	close(work)
	gen.Wait()
	put.Wait()
	if firstErr == nil && ctx.Err() != nil {
		firstErr = ctx.Err()
	}
	return out, firstErr
}

// maxCreateWrites bounds the key set writes in flight while creating.
const maxCreateWrites = 64

func (m *Manager) create(ctx context.Context, p keystore.Policy) (*keystore.KeySet, error) {
	ks, err := m.generate(ctx, p)
	if err != nil {
		return nil, err
	}
	return m.storeNew(ctx, p, ks)
}

// generate makes a new key set's first two keys (CPU work: seconds for
// RSA 4096).
func (m *Manager) generate(ctx context.Context, p keystore.Policy) (*keystore.KeySet, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	now := m.now()
	first, err := m.newKey(ctx, p, now)
	if err != nil {
		return nil, err
	}
	next, err := m.newKey(ctx, p, now)
	if err != nil {
		m.destroy(ctx, p, []keystore.Key{first})
		return nil, err
	}
	ks, err := keystore.NewKeySet(p.Name, p.Algorithm, first, next, now)
	if err == nil {
		ks, _, err = certify(ks, p, now)
	}
	if err != nil {
		m.destroy(ctx, p, []keystore.Key{first, next})
	}
	return ks, err
}

// storeNew writes a new key set; if another replica created it first, its
// key set is the one kept.
func (m *Manager) storeNew(ctx context.Context, p keystore.Policy, ks *keystore.KeySet) (*keystore.KeySet, error) {
	stored, err := m.store.Put(ctx, ks)
	if errors.Is(err, keystore.ErrConflict) {
		m.destroy(ctx, p, ks.Keys) // the other replica's keys are kept
		return m.store.Get(ctx, ks.Name)
	}
	if err != nil {
		return nil, err
	}
	active, _ := ks.Active()
	pending, _ := ks.Pending()
	m.log.Info("created key set", "keyset", ks.Name, "algorithm", ks.Algorithm, "active_kid", active.ID, "pending_kid", pending.ID)
	m.emit(Event{Kind: EventCreated, KeySet: ks.Name, KID: active.ID, Pending: pending.ID, Actor: actorOf(ctx)})
	return stored, nil
}
