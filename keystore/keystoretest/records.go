package keystoretest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/keyd-dev/keyd/keystore"
)

// RunRecords is the conformance suite of keystore.RecordStore: every
// backend that offers records passes it.
func RunRecords(t *testing.T, newStore func(t *testing.T) keystore.RecordStore) {
	ctx := context.Background()
	t.Run("RecordLifecycle", func(t *testing.T) {
		s := newStore(t)
		if _, err := s.GetRecord(ctx, "family", "nope"); !errors.Is(err, keystore.ErrNotFound) {
			t.Fatalf("GetRecord(missing) = %v", err)
		}
		v1, err := s.PutRecord(ctx, "family", &keystore.Record{ID: "a", Data: []byte("one")})
		if err != nil || v1.Version == 0 {
			t.Fatalf("create: %+v %v", v1, err)
		}
		if _, err := s.PutRecord(ctx, "family", &keystore.Record{ID: "a", Data: []byte("again")}); !errors.Is(err, keystore.ErrConflict) {
			t.Fatalf("create twice = %v", err)
		}
		v2, err := s.PutRecord(ctx, "family", &keystore.Record{ID: "a", Data: []byte("two"), Version: v1.Version})
		if err != nil || v2.Version <= v1.Version {
			t.Fatalf("update: %+v %v", v2, err)
		}
		if _, err := s.PutRecord(ctx, "family", &keystore.Record{ID: "a", Data: []byte("stale"), Version: v1.Version}); !errors.Is(err, keystore.ErrConflict) {
			t.Fatalf("stale update = %v", err)
		}
		got, err := s.GetRecord(ctx, "family", "a")
		if err != nil || string(got.Data) != "two" || got.Version != v2.Version {
			t.Fatalf("get: %+v %v", got, err)
		}
		if _, err := s.PutRecord(ctx, "other-kind", &keystore.Record{ID: "a", Data: []byte("x")}); err != nil {
			t.Fatalf("same id, another kind: %v", err)
		}
		if _, err := s.PutRecord(ctx, "family", &keystore.Record{ID: "b", Data: []byte("b")}); err != nil {
			t.Fatal(err)
		}
		list, err := s.ListRecords(ctx, "family")
		if err != nil || len(list) != 2 {
			t.Fatalf("list: %d records, %v", len(list), err)
		}
		if err := s.DeleteRecord(ctx, "family", "a"); err != nil {
			t.Fatal(err)
		}
		if err := s.DeleteRecord(ctx, "family", "a"); err != nil {
			t.Fatalf("deleting a missing record: %v", err)
		}
		if _, err := s.GetRecord(ctx, "family", "a"); !errors.Is(err, keystore.ErrNotFound) {
			t.Fatalf("after delete: %v", err)
		}
		if list, _ := s.ListRecords(ctx, "empty-kind"); len(list) != 0 {
			t.Fatalf("an empty kind lists %d", len(list))
		}
	})
	t.Run("RecordsWrittenOver", func(t *testing.T) { recordsWrittenOver(t, newStore(t)) })
	t.Run("RecordWithExpiryReadsBack", func(t *testing.T) {
		s := newStore(t)
		exp := time.Now().Add(time.Hour)
		if _, err := s.PutRecord(ctx, "exp", &keystore.Record{ID: "e", Data: []byte("x"), Expires: exp}); err != nil {
			t.Fatal(err)
		}
		if got, err := s.GetRecord(ctx, "exp", "e"); err != nil || string(got.Data) != "x" {
			t.Fatalf("a record with an expiry: %+v %v", got, err)
		}
	})
	t.Run("RecordRaceHasOneWinner", func(t *testing.T) {
		s := newStore(t)
		base, err := s.PutRecord(ctx, "race", &keystore.Record{ID: "r", Data: []byte("0")})
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		var mu sync.Mutex
		won := 0
		for i := range 8 {
			wg.Go(func() {
				_, err := s.PutRecord(ctx, "race", &keystore.Record{ID: "r", Data: fmt.Appendf(nil, "%d", i), Version: base.Version})
				if err == nil {
					mu.Lock()
					won++
					mu.Unlock()
				} else if !errors.Is(err, keystore.ErrConflict) {
					t.Errorf("racing write: %v", err)
				}
			})
		}
		wg.Wait()
		if won != 1 {
			t.Fatalf("%d writers won the same version", won)
		}
	})
}

// recordsWrittenOver: keystore.PutRecordsOver (a restore's bulk write)
// writes new records and over stored ones, twice harmlessly, each written
// over record keeping compare-and-swap.
func recordsWrittenOver(t *testing.T, s keystore.RecordStore) {
	ctx := context.Background()
	old, err := s.PutRecord(ctx, "family", &keystore.Record{ID: "kept", Data: []byte("old")})
	if err != nil {
		t.Fatal(err)
	}
	var recs []*keystore.Record
	for i := range 50 {
		recs = append(recs, &keystore.Record{ID: fmt.Sprint("r", i), Data: fmt.Appendf(nil, "data %d", i)})
	}
	recs = append(recs, &keystore.Record{ID: "kept", Data: []byte("new")})
	if err := keystore.PutRecordsOver(ctx, s, "family", recs); err != nil {
		t.Fatal(err)
	}
	if err := keystore.PutRecordsOver(ctx, s, "family", recs[:3]); err != nil { // again: over themselves
		t.Fatal(err)
	}
	got, err := s.ListRecords(ctx, "family")
	if err != nil || len(got) != 51 {
		t.Fatalf("ListRecords after a bulk write = %d records, %v; want 51", len(got), err)
	}
	r, err := s.GetRecord(ctx, "family", "kept")
	if err != nil || string(r.Data) != "new" || r.Version <= old.Version {
		t.Fatalf("record written over = %+v, %v; want data new past version %d", r, err, old.Version)
	}
	if _, err := s.PutRecord(ctx, "family", &keystore.Record{ID: "kept", Data: []byte("x"), Version: r.Version}); err != nil {
		t.Fatalf("compare-and-swap on a record written over: %v", err)
	}
}
