// Package tokenstatetest is the conformance suite every token state engine
// passes: Run(t, newStore).
package tokenstatetest

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/keyd-dev/keyd/tokenstate"
)

// Run checks an engine; newStore returns a fresh, empty store.
func Run(t *testing.T, newStore func(t *testing.T) tokenstate.Store) {
	// The real clock: engines such as Redis expire entries by it.
	now := time.Now().UTC().Truncate(time.Millisecond)
	for _, c := range []struct {
		name  string
		check func(*testing.T, tokenstate.Store, time.Time)
	}{
		{"PutAndList", putAndList},
		{"PutAgainMerges", putAgainMerges},
		{"TokenRevokedAgain", tokenRevokedAgain},
		{"Prune", prune},
		{"ConcurrentPutsLoseNothing", concurrentPutsLoseNothing},
		{"BulkPutTwiceIsOnce", bulkPutTwiceIsOnce},
	} {
		t.Run(c.name, func(t *testing.T) { c.check(t, newStore(t), now) })
	}
}

func putAndList(t *testing.T, s tokenstate.Store, now time.Time) {
	ctx := context.Background()
	tok := tokenstate.Revocation{KeySet: "a", JTI: "j1", Expires: now.Add(time.Hour), RevokedAt: now, Reason: "stolen"}
	sub := tokenstate.Revocation{KeySet: "a", Subject: "alice@example.com", Before: now, Expires: now.Add(2 * time.Hour), RevokedAt: now}
	other := tokenstate.Revocation{KeySet: "b", JTI: "j1", Expires: now.Add(time.Hour), RevokedAt: now}
	for _, r := range []tokenstate.Revocation{tok, sub, other} {
		if _, err := s.PutRevocation(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	all, err := tokenstate.All(ctx, s)
	if err != nil || len(all) != 3 {
		t.Fatalf("Revocations = %d, %v", len(all), err)
	}
	got := map[string]tokenstate.Revocation{}
	for _, r := range all {
		got[r.ID()] = r
	}
	if g := got[tok.ID()]; g.JTI != "j1" || !g.Expires.Equal(tok.Expires) || g.Reason != "stolen" || g.KeySet != "a" {
		t.Fatalf("token entry: %+v", g)
	}
	if g := got[sub.ID()]; g.Subject != sub.Subject || !g.Before.Equal(now) || !g.Expires.Equal(sub.Expires) {
		t.Fatalf("subject entry: %+v", g)
	}
}

func putAgainMerges(t *testing.T, s tokenstate.Store, now time.Time) {
	ctx := context.Background()
	r := tokenstate.Revocation{KeySet: "a", Subject: "bob", Before: now, Expires: now.Add(time.Hour), RevokedAt: now}
	if _, err := s.PutRevocation(ctx, r); err != nil {
		t.Fatal(err)
	}
	later := r
	later.Before, later.Expires, later.RevokedAt = now.Add(time.Minute), now.Add(2*time.Hour), now.Add(time.Minute)
	stored, err := s.PutRevocation(ctx, later)
	if err != nil || !stored.Before.Equal(later.Before) || !stored.Expires.Equal(later.Expires) {
		t.Fatalf("merged: %+v %v", stored, err)
	}
	// An earlier one does not move it back.
	stored, err = s.PutRevocation(ctx, r)
	if err != nil || !stored.Before.Equal(later.Before) || !stored.Expires.Equal(later.Expires) {
		t.Fatalf("an earlier revocation moved it back: %+v %v", stored, err)
	}
	if all, _ := tokenstate.All(ctx, s); len(all) != 1 {
		t.Fatalf("%d entries for one subject", len(all))
	}
}

func tokenRevokedAgain(t *testing.T, s tokenstate.Store, now time.Time) {
	ctx := context.Background()
	r := tokenstate.Revocation{KeySet: "a", JTI: "twice", Expires: now.Add(time.Hour), RevokedAt: now, Reason: "first"}
	again := r
	again.Expires, again.RevokedAt, again.Reason = now.Add(2*time.Hour), now.Add(time.Second), "second"
	for _, x := range []tokenstate.Revocation{r, again} {
		if _, err := s.PutRevocation(ctx, x); err != nil {
			t.Fatal(err)
		}
	}
	all, err := tokenstate.All(ctx, s)
	if err != nil || len(all) == 0 || len(all) > 2 {
		t.Fatalf("Revocations = %d, %v", len(all), err)
	}
	merged := all[0]
	for _, x := range all[1:] {
		merged = merged.Merge(x)
	}
	if merged.JTI != "twice" || !merged.Expires.Equal(again.Expires) {
		t.Fatalf("merged: %+v", merged)
	}
}

func prune(t *testing.T, s tokenstate.Store, now time.Time) {
	ctx := context.Background()
	for i, exp := range []time.Duration{-time.Minute, time.Minute} {
		if _, err := s.PutRevocation(ctx, tokenstate.Revocation{KeySet: "a", JTI: fmt.Sprint(i), Expires: now.Add(exp), RevokedAt: now}); err != nil {
			t.Fatal(err)
		}
	}
	// An engine that expires entries itself (Redis) may have nothing
	// left to prune.
	if n, err := s.PruneRevocations(ctx, now); n > 1 || err != nil {
		t.Fatalf("pruned %d, %v", n, err)
	}
	if all, _ := tokenstate.All(ctx, s); len(all) != 1 || all[0].JTI != "1" {
		t.Fatalf("after prune: %+v", all)
	}
}

func concurrentPutsLoseNothing(t *testing.T, s tokenstate.Store, now time.Time) {
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for i := range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Half of them the same subject: merges, not duplicates.
			r := tokenstate.Revocation{KeySet: "a", JTI: fmt.Sprintf("j%d", i), Expires: now.Add(time.Hour), RevokedAt: now}
			if i%2 == 0 {
				r = tokenstate.Revocation{KeySet: "a", Subject: "carol", Before: now.Add(time.Duration(i) * time.Second), Expires: now.Add(time.Hour), RevokedAt: now}
			}
			if _, err := s.PutRevocation(ctx, r); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	all, err := tokenstate.All(ctx, s)
	if err != nil || len(all) != 33 {
		t.Fatalf("%d entries (want 32 tokens and one subject), %v", len(all), err)
	}
	for _, r := range all {
		if r.IsSubject() && !r.Before.Equal(now.Add(62*time.Second)) {
			t.Fatalf("the subject's cut-off is %v, want the latest", r.Before)
		}
	}
}

// bulkPutTwiceIsOnce: revocations written at once (a restore), then the
// same again (a restore run again), are each in force once, and a subject
// written over an earlier entry of its own keeps the later cut-off.
func bulkPutTwiceIsOnce(t *testing.T, s tokenstate.Store, now time.Time) {
	ctx := context.Background()
	later := tokenstate.Revocation{KeySet: "a", Subject: "carol", Before: now, Expires: now.Add(2 * time.Hour), RevokedAt: now}
	if _, err := s.PutRevocation(ctx, later); err != nil {
		t.Fatal(err)
	}
	var batch []tokenstate.Revocation
	for i := range 200 {
		batch = append(batch, tokenstate.Revocation{KeySet: "a", JTI: fmt.Sprint("bulk-", i), Expires: now.Add(time.Hour), RevokedAt: now.Add(-time.Duration(i) * time.Second)})
	}
	batch = append(batch, tokenstate.Revocation{KeySet: "a", Subject: "carol", Before: now.Add(-time.Hour), Expires: now.Add(time.Hour), RevokedAt: now.Add(-time.Hour)})
	for range 2 {
		if err := tokenstate.PutRevocations(ctx, s, batch); err != nil {
			t.Fatal(err)
		}
	}
	idx := tokenstate.NewIndex()
	if err := s.Revocations(ctx, func(r tokenstate.Revocation) { _ = idx.Add(r, 0) }); err != nil {
		t.Fatal(err)
	}
	tokens, subjects := idx.Entries("a", now)
	if len(tokens) != 200 || len(subjects) != 1 {
		t.Fatalf("after a bulk write done twice: %d tokens and %d subjects in force, want 200 and 1", len(tokens), len(subjects))
	}
	if !subjects[0].Before.Equal(now) || !subjects[0].Expires.Equal(now.Add(2*time.Hour)) {
		t.Fatalf("subject entry %+v lost its later cut-off or expiry", subjects[0])
	}
}
