package authguard_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/keyd-dev/keyd/audit"
	"github.com/keyd-dev/keyd/internal/authguard"
	"github.com/keyd-dev/keyd/keystore/keystoretest"
)

type sink struct {
	mu   sync.Mutex
	recs []audit.Record
}

func (s *sink) record(r audit.Record) { s.mu.Lock(); s.recs = append(s.recs, r); s.mu.Unlock() }
func (s *sink) take() []audit.Record {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := s.recs
	s.recs = nil
	return out
}

func TestLimitPerSource(t *testing.T) {
	c := keystoretest.NewClock(time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC))
	g := authguard.New(authguard.Options{Now: c.Now, Burst: 3, Rate: 0.5})
	for i := range 3 {
		if _, limited := g.Failed("10.0.0.1:5000", "unknown_token", "POST /sign"); limited {
			t.Fatalf("failure %d limited within the burst", i+1)
		}
	}
	wait, limited := g.Failed("10.0.0.1:6000", "missing", "POST /sign") // another port: the same source
	if !limited || wait <= 0 || wait > 2*time.Second {
		t.Fatalf("4th failure: limited %v, wait %v (want about 2s)", limited, wait)
	}
	if _, limited := g.Failed("10.0.0.2:5000", "missing", "POST /sign"); limited {
		t.Fatal("another source limited")
	}
	c.Add(2 * time.Second)
	if _, limited := g.Failed("10.0.0.1:5000", "missing", "POST /sign"); limited {
		t.Fatal("still limited after the wait")
	}
	if _, limited := g.Failed("10.0.0.1:5000", "missing", "POST /sign"); !limited {
		t.Fatal("the refill allowed more than its rate")
	}
}

// However many failures, each source, reason and route gets one record at
// once and one summary per interval.
func TestRecordsAreAggregated(t *testing.T) {
	c := keystoretest.NewClock(time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC))
	var s sink
	g := authguard.New(authguard.Options{Now: c.Now, Record: s.record})
	for range 5000 {
		g.Failed("[2001:db8::1]:443", "unknown_token", "POST /v1/keysets/{name}/sign")
		g.Failed("192.0.2.7:1", "missing", "GET /v1/keysets")
	}
	first := s.take()
	if len(first) != 2 || first[0].Count != 1 || first[0].Remote != "2001:db8::1" || first[1].Remote != "192.0.2.7" {
		t.Fatalf("first records: %+v", first)
	}
	c.Add(time.Minute)
	g.Flush()
	sum := s.take()
	if len(sum) != 2 {
		t.Fatalf("summaries: %+v", sum)
	}
	for _, r := range sum {
		if r.Count != 4999 || r.Event != audit.EventAuthFailed {
			t.Errorf("summary %+v: want count 4999", r)
		}
	}
	// A quiet interval writes nothing; a source quiet long enough is forgotten.
	c.Add(time.Hour)
	g.Flush()
	if r := s.take(); len(r) != 0 || g.Sources() != 0 {
		t.Fatalf("quiet interval: %d records, %d sources", len(r), g.Sources())
	}
}

func TestSourcesAreBounded(t *testing.T) {
	c := keystoretest.NewClock(time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC))
	var s sink
	g := authguard.New(authguard.Options{Now: c.Now, MaxSources: 100, Record: s.record})
	for i := range 10000 {
		g.Failed(fmt.Sprintf("10.1.%d.%d:1", i/256, i%256), "missing", "GET /x")
	}
	if n := g.Sources(); n != 101 { // 100 and "other"
		t.Fatalf("sources tracked: %d", n)
	}
	if n := len(s.take()); n != 101 {
		t.Fatalf("records: %d", n)
	}
}
