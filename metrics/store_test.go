package metrics_test

import (
	"context"
	"errors"
	"path/filepath"
	"testing"

	"github.com/keyd-dev/keyd/backends/file"
	"github.com/keyd-dev/keyd/keystore"
	"github.com/keyd-dev/keyd/metrics"
)

// The store wrapper counts record operations too, by op, and keeps the
// store's own scan and bulk write (bbolt's), which the token state relies
// on at a million records.
func TestStoreCountsRecords(t *testing.T) {
	key, _ := file.NewMasterKey()
	raw, _ := file.ParseMasterKey(key)
	bolt, err := file.Open(file.Options{Path: filepath.Join(t.TempDir(), "keyd.db"), MasterKey: raw})
	if err != nil {
		t.Fatal(err)
	}
	defer bolt.Close()
	m := metrics.New()
	s := m.Store(bolt)
	ctx := context.Background()
	if _, err := s.PutRecord(ctx, "refresh", &keystore.Record{ID: "a", Data: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetRecord(ctx, "refresh", "missing"); !errors.Is(err, keystore.ErrNotFound) {
		t.Fatal(err)
	}
	if err := keystore.PutRecordsOver(ctx, s, "refresh", []*keystore.Record{{ID: "b", Data: []byte("y")}}); err != nil {
		t.Fatal(err)
	}
	n := 0
	if err := keystore.EachRecord(ctx, s, "refresh", func(*keystore.Record) error { n++; return nil }); err != nil || n != 2 {
		t.Fatalf("EachRecord: %d, %v", n, err)
	}
	if err := s.DeleteRecord(ctx, "refresh", "a"); err != nil {
		t.Fatal(err)
	}
	if _, ok := s.(keystore.RecordScanner); !ok {
		t.Fatal("the wrapper hides the store's scan")
	}
	if _, ok := s.(keystore.RecordBulkWriter); !ok {
		t.Fatal("the wrapper hides the store's bulk write")
	}
	families, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	counts, failures := map[string]uint64{}, 0.0
	for _, f := range families {
		for _, mt := range f.GetMetric() {
			op := ""
			for _, l := range mt.GetLabel() {
				if l.GetName() == "op" {
					op = l.GetValue()
				}
			}
			switch f.GetName() {
			case "keyd_store_operation_duration_seconds":
				counts[op] = mt.GetHistogram().GetSampleCount()
			case "keyd_store_errors_total":
				failures += mt.GetCounter().GetValue()
			}
		}
	}
	want := map[string]uint64{"put_record": 2, "get_record": 1, "list_records": 1, "delete_record": 1}
	for op, c := range want {
		if counts[op] != c {
			t.Errorf("%s counted %d times, want %d (all: %v)", op, counts[op], c, counts)
		}
	}
	if failures != 0 {
		t.Errorf("a not-found record counted as a failure: %v", failures)
	}
}
