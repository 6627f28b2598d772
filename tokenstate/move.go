package tokenstate

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/keyd-dev/keyd/keystore"
)

// Move copies what one token state engine holds into another, when an
// operator changes storage.token_state: every revocation of from, merged
// into to's (PutRevocation), and every record of kinds (refresh logins,
// subject cut-offs) of fromRecs, written over toRecs's (the engine being
// left held the state in force until now: a login refreshed there since
// an earlier move replaces the older copy). Nothing is deleted from from,
// so a move that stops half-way (a crash, a store that did not answer) is
// run again whole and changes nothing twice. Every replica must switch
// together: one still writing to the engine left would be missed. expiry
// gives a record's expiry (for a store that expires records itself: Redis)
// from its kind and data, nil for none. It returns how many revocations
// and records it copied.
func Move(ctx context.Context, from, to Store, fromRecs, toRecs keystore.RecordStore, kinds []string,
	expiry func(kind string, data []byte) time.Time) (revocations, records int, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var n, recs atomic.Int64
	var mu sync.Mutex
	var firstErr error
	fail := func(err error) {
		mu.Lock()
		defer mu.Unlock()
		if firstErr == nil {
			firstErr = err
			cancel()
		}
	}
	if from != nil && to != nil {
		err := from.Revocations(ctx, func(r Revocation) {
			if ctx.Err() != nil {
				return
			}
			if _, err := to.PutRevocation(ctx, r); err != nil {
				fail(err)
				return
			}
			n.Add(1)
		})
		if err != nil {
			fail(err)
		}
	}
	if firstErr != nil {
		return int(n.Load()), 0, firstErr
	}
	for _, kind := range kinds {
		if fromRecs == nil || toRecs == nil {
			break
		}
		err := keystore.EachRecord(ctx, fromRecs, kind, func(r *keystore.Record) error {
			expires := r.Expires
			if expiry != nil && expires.IsZero() {
				expires = expiry(kind, r.Data)
			}
			err := keystore.UpdateRecord(ctx, toRecs, kind, r.ID, func(*keystore.Record) ([]byte, time.Time, error) {
				return r.Data, expires, nil
			})
			if err != nil {
				return err
			}
			recs.Add(1)
			return nil
		})
		if err != nil {
			return int(n.Load()), int(recs.Load()), err
		}
	}
	return int(n.Load()), int(recs.Load()), nil
}
