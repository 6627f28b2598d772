package backup

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync/atomic"
	"time"

	"filippo.io/age"
	"golang.org/x/sync/errgroup"

	"github.com/keyd-dev/keyd/keystore"
	"github.com/keyd-dev/keyd/tokenstate"
)

// The record in the key store (State.Meta) that marks a restore under way.
const (
	markerKind = "restore"
	markerID   = "state"
)

type marker struct {
	SHA256    string    `json:"sha256"` // the backup's (Manifest.SHA256)
	CreatedAt time.Time `json:"created_at"`
	StartedAt time.Time `json:"started_at"`
}

// RestoreOptions configure Restore.
type RestoreOptions struct {
	// Replace restores into a store that holds key sets already: the
	// backup's key sets replace those of the same name, the others stay;
	// revocations merge (none is dropped); logins are written over.
	Replace bool
	Now     time.Time // default time.Now
	// Expiry gives a record with no expiry of its own one, for a store
	// that expires records itself (Redis); nil: none.
	Expiry func(kind string, data []byte) time.Time
	// Workers write key sets at once (default 64): the stores batch
	// concurrent writes.
	Workers int
}

// Result says what a restore wrote.
type Result struct {
	Manifest    *Manifest
	KeySets     int
	Revocations int
	Records     int
	Expired     int      // entries already expired, not written
	Kept        []string // key sets of the target the backup does not hold (Replace)
	Resumed     bool     // it finished a restore of the same backup that had stopped
}

// Restore writes the backup in f into dst. It reads f twice: first whole,
// checking it as Check does and writing nothing, so a damaged or altered
// backup changes nothing; then writing. dst must hold no key set unless
// opts.Replace, or unless a restore of this same backup stopped half-way
// (it is then finished). A marker in dst.Meta says a restore is under
// way until it is done, and keyd refuses to start on a store that holds
// one (CheckNotRestoring): killed at any moment, the store is served whole
// or not at all, and running Restore again finishes it. Revocations and
// records are written before the key sets, so a key is never in the store
// without the revocations of its tokens.
func Restore(ctx context.Context, f io.ReadSeeker, ids []age.Identity, dst State, opts RestoreOptions) (*Result, error) {
	m, err := Check(f, ids)
	if err != nil {
		return nil, err
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	if opts.Now.IsZero() {
		opts.Now = time.Now()
	}
	res := &Result{Manifest: m}
	if err := begin(ctx, dst, m, opts, res); err != nil {
		return nil, err
	}
	if err := write(ctx, f, ids, dst, opts, res); err != nil {
		return nil, err
	}
	if err := dst.Meta.DeleteRecord(ctx, markerKind, markerID); err != nil {
		return nil, fmt.Errorf("restore written, but its marker stays (run it again): %w", err)
	}
	return res, nil
}

// begin refuses a target that holds key sets (unless Replace, or a restore
// of the same backup is to be finished) and marks the restore under way.
func begin(ctx context.Context, dst State, m *Manifest, opts RestoreOptions, res *Result) error {
	var cur marker
	r, err := dst.Meta.GetRecord(ctx, markerKind, markerID)
	switch {
	case err == nil:
		if json.Unmarshal(r.Data, &cur) != nil {
			cur = marker{}
		}
	case !errors.Is(err, keystore.ErrNotFound):
		return err
	}
	res.Resumed = cur.SHA256 == m.SHA256
	if cur.SHA256 != "" && !res.Resumed && !opts.Replace {
		return fmt.Errorf("a restore of another backup (made %s) into this store did not finish: run it again with that backup, or give --replace to restore this one over it", cur.CreatedAt.Format(time.RFC3339))
	}
	sets, err := dst.KeySets.List(ctx)
	if err != nil {
		return err
	}
	for _, ks := range sets {
		if !slices.ContainsFunc(m.KeySets, func(s KeySetSummary) bool { return s.Name == ks.Name }) {
			res.Kept = append(res.Kept, ks.Name)
		}
	}
	if len(sets) > 0 && !res.Resumed && !opts.Replace {
		names := make([]string, 0, 3)
		for _, ks := range sets[:min(3, len(sets))] {
			names = append(names, ks.Name)
		}
		return fmt.Errorf("the target store holds %d key set(s) (%v): restore into an empty store, or give --replace to write the backup's key sets over those of the same name", len(sets), names)
	}
	data, err := json.Marshal(marker{SHA256: m.SHA256, CreatedAt: m.CreatedAt, StartedAt: opts.Now.UTC()})
	if err != nil {
		return err
	}
	return keystore.UpdateRecord(ctx, dst.Meta, markerKind, markerID, func(*keystore.Record) ([]byte, time.Time, error) {
		return data, time.Time{}, nil
	})
}

// write reads f again and writes its entries: revocations and records in
// batches (one write each where the store can: a bbolt transaction), two
// batches at once while the next is read; the key sets at the end.
func write(ctx context.Context, f io.Reader, ids []age.Identity, dst State, opts RestoreOptions, res *Result) error {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(2)
	var revs, recs, expired atomic.Int64
	var sets []*keystore.KeySet
	var revBatch []tokenstate.Revocation
	recBatches := map[string][]*keystore.Record{}
	flushRevs := func() {
		batch := revBatch
		revBatch = nil
		g.Go(func() error {
			revs.Add(int64(len(batch)))
			return tokenstate.PutRevocations(gctx, dst.Tokens, batch)
		})
	}
	flushRecs := func(kind string) {
		batch := recBatches[kind]
		delete(recBatches, kind)
		g.Go(func() error {
			recs.Add(int64(len(batch)))
			return keystore.PutRecordsOver(gctx, dst.Records, kind, batch)
		})
	}
	_, err := read(f, ids, func(e entry) error {
		if err := gctx.Err(); err != nil {
			return err
		}
		switch {
		case e.KeySet != nil:
			ks, err := e.keySet()
			if err != nil {
				return err
			}
			sets = append(sets, ks)
		case e.Revocation != nil:
			r := e.Revocation
			if r.Expires.Before(opts.Now) {
				expired.Add(1)
				return nil
			}
			if dst.Tokens == nil {
				return errors.New("the backup holds revocations and the target keeps no token state")
			}
			revBatch = append(revBatch, tokenstate.Revocation{KeySet: r.KeySet, JTI: r.JTI, Subject: r.Subject,
				Before: r.Before, Expires: r.Expires, RevokedAt: r.RevokedAt, Reason: r.Reason})
			if len(revBatch) == batchSize {
				flushRevs()
			}
		case e.Record != nil:
			r := e.Record
			if !r.Expires.IsZero() && r.Expires.Before(opts.Now) {
				expired.Add(1)
				return nil
			}
			if dst.Records == nil {
				return errors.New("the backup holds logins and the target keeps no token state records")
			}
			expires := r.Expires
			if expires.IsZero() && opts.Expiry != nil {
				expires = opts.Expiry(r.Kind, r.Data)
			}
			recBatches[r.Kind] = append(recBatches[r.Kind], &keystore.Record{ID: r.ID, Data: r.Data, Expires: expires})
			if len(recBatches[r.Kind]) == batchSize {
				flushRecs(r.Kind)
			}
		}
		return nil
	})
	if err == nil && len(revBatch) > 0 {
		flushRevs()
	}
	for kind := range recBatches {
		if err == nil {
			flushRecs(kind)
		}
	}
	if werr := g.Wait(); err == nil {
		err = werr
	}
	if err != nil {
		return err
	}
	if err := putKeySets(ctx, dst.KeySets, sets, cmp.Or(opts.Workers, 64)); err != nil {
		return err
	}
	res.KeySets, res.Revocations, res.Records, res.Expired = len(sets), int(revs.Load()), int(recs.Load()), int(expired.Load())
	return nil
}

// batchSize is how many revocations or records a restore writes at once.
const batchSize = 10_000

// putKeySets writes the key sets, workers at once (the store batches
// concurrent writes).
func putKeySets(ctx context.Context, s keystore.Store, sets []*keystore.KeySet, workers int) error {
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(workers)
	for _, ks := range sets {
		g.Go(func() error {
			if err := putKeySet(ctx, s, ks); err != nil {
				return fmt.Errorf("key set %s: %w", ks.Name, err)
			}
			return nil
		})
	}
	return g.Wait()
}

// putKeySet writes ks, over the stored key set of that name if there is
// one (a restore finished again, or Replace).
func putKeySet(ctx context.Context, s keystore.Store, ks *keystore.KeySet) error {
	ks.Version = 0
	_, err := s.Put(ctx, ks)
	if !errors.Is(err, keystore.ErrConflict) {
		return err
	}
	_, err = keystore.Update(ctx, s, ks.Name, func(cur *keystore.KeySet) (*keystore.KeySet, error) {
		return ks, nil
	})
	return err
}

// CheckNotRestoring refuses a store into which a restore did not finish:
// serving half of a backup would drop revocations or keys.
func CheckNotRestoring(ctx context.Context, meta keystore.RecordStore) error {
	r, err := meta.GetRecord(ctx, markerKind, markerID)
	if err != nil {
		if errors.Is(err, keystore.ErrNotFound) || errors.Is(err, keystore.ErrUnavailable) {
			return nil // none; or the store is not up yet (a start that waits for it)
		}
		return err
	}
	var m marker
	_ = json.Unmarshal(r.Data, &m)
	return fmt.Errorf("a restore into this store started %s (of the backup made %s) did not finish: run keyd restore again with that backup; keyd will not serve half of it",
		m.StartedAt.Format(time.RFC3339), m.CreatedAt.Format(time.RFC3339))
}
