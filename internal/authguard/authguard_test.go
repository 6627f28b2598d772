package authguard_test

import (
	"fmt"
	"net/http/httptest"
	"net/netip"
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

// fail notes a failed authentication of a request from remote.
func fail(g *authguard.Guard, remote, reason, route string, xff ...string) (time.Duration, bool) {
	r := httptest.NewRequest("POST", "/x", nil)
	r.RemoteAddr = remote
	for _, h := range xff {
		r.Header.Add("X-Forwarded-For", h)
	}
	return g.Failed(g.Source(r), reason, route)
}

func TestLimitPerSource(t *testing.T) {
	c := keystoretest.NewClock(time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC))
	g := authguard.New(authguard.Options{Now: c.Now, Burst: 3, Rate: 0.5})
	for i := range 3 {
		if _, limited := fail(g, "10.0.0.1:5000", "unknown_token", "POST /sign"); limited {
			t.Fatalf("failure %d limited within the burst", i+1)
		}
	}
	wait, limited := fail(g, "10.0.0.1:6000", "missing", "POST /sign") // another port: the same source
	if !limited || wait <= 0 || wait > 2*time.Second {
		t.Fatalf("4th failure: limited %v, wait %v (want about 2s)", limited, wait)
	}
	if _, limited := fail(g, "10.0.0.2:5000", "missing", "POST /sign"); limited {
		t.Fatal("another source limited")
	}
	c.Add(2 * time.Second)
	if _, limited := fail(g, "10.0.0.1:5000", "missing", "POST /sign"); limited {
		t.Fatal("still limited after the wait")
	}
	if _, limited := fail(g, "10.0.0.1:5000", "missing", "POST /sign"); !limited {
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
		fail(g, "[2001:db8::1]:443", "unknown_token", "POST /v1/keysets/{name}/sign")
		fail(g, "192.0.2.7:1", "missing", "GET /v1/keysets")
	}
	first := s.take()
	if len(first) != 2 || first[0].Count != 1 || first[0].Remote != "2001:db8::/64" || first[1].Remote != "192.0.2.7" {
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
		fail(g, fmt.Sprintf("10.1.%d.%d:1", i/256, i%256), "missing", "GET /x")
	}
	if n := g.Sources(); n != 101 { // 100 and "other"
		t.Fatalf("sources tracked: %d", n)
	}
	if n := len(s.take()); n != authguard.DefaultMaxRecords {
		t.Fatalf("records at once: %d, want the interval's %d", n, authguard.DefaultMaxRecords)
	}
	c.Add(time.Minute)
	g.Flush()
	recs := s.take()
	total := counted(recs)
	if len(recs) > authguard.DefaultMaxRecords || total != 10000-authguard.DefaultMaxRecords {
		t.Fatalf("the interval's end: %d records counting %d failures", len(recs), total)
	}
}

// 10,000 failures from 300 addresses of one IPv6 /64 and from 300 IPv4
// addresses: the /64 is one source (limited with 429 like one host), and
// the audit trail gets at most a few dozen records a minute in all. Each
// address was a source of its own, and 300 sources wrote 300 records and
// more.
func TestManySourcesFewRecords(t *testing.T) {
	c := keystoretest.NewClock(time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC))
	var s sink
	g := authguard.New(authguard.Options{Now: c.Now, Record: s.record})
	limited6, limited4 := 0, 0
	for i := range 5000 {
		if _, l := fail(g, fmt.Sprintf("[2001:db8:1:2::%x]:443", i%300+1), "unknown_token", "POST /sign"); l {
			limited6++
		}
		if _, l := fail(g, fmt.Sprintf("198.51.%d.%d:443", i%300/256, i%300%256+1), "unknown_token", "POST /sign"); l {
			limited4++
		}
	}
	if limited6 != 5000-authguard.DefaultBurst {
		t.Errorf("the /64: %d of 5000 limited, want all past the burst of one source", limited6)
	}
	if limited4 != 0 {
		t.Errorf("300 IPv4 hosts, each under its burst: %d limited", limited4)
	}
	c.Add(time.Minute)
	g.Flush()
	recs := s.take()
	total := counted(recs)
	if len(recs) > 2*authguard.DefaultMaxRecords || total != 10000 {
		t.Fatalf("%d records counting %d failures, want at most %d counting 10000", len(recs), total, 2*authguard.DefaultMaxRecords)
	}
}

// Behind a trusted proxy each client is its own source; X-Forwarded-For
// from anyone else is ignored, and so is what a client wrote to the left
// of what the proxy appended.
func TestTrustedProxies(t *testing.T) {
	c := keystoretest.NewClock(time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC))
	g := authguard.New(authguard.Options{Now: c.Now, Burst: 2, Rate: 0.001, TrustedProxies: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}})
	for i := range 50 {
		if _, l := fail(g, "10.1.2.3:80", "missing", "GET /x", fmt.Sprintf("192.0.2.%d", i+1)); l {
			t.Fatalf("client %d behind the proxy limited as the proxy", i)
		}
	}
	for _, tc := range []struct {
		remote string
		xff    []string
		want   string
	}{
		{"10.1.2.3:80", []string{"203.0.113.9"}, "203.0.113.9"},
		{"10.1.2.3:80", []string{"1.2.3.4, 203.0.113.9, 10.9.9.9"}, "203.0.113.9"}, // a client's own 1.2.3.4 is not read
		{"198.51.100.7:80", []string{"203.0.113.9"}, "198.51.100.7"},               // not a proxy: its header is ignored
		{"10.1.2.3:80", nil, "10.1.2.3"},
		{"10.1.2.3:80", []string{"garbage, 203.0.113.9"}, "203.0.113.9"},
	} {
		r := httptest.NewRequest("GET", "/x", nil)
		r.RemoteAddr = tc.remote
		for _, h := range tc.xff {
			r.Header.Add("X-Forwarded-For", h)
		}
		if got := g.Source(r); got != tc.want {
			t.Errorf("%s with %v: source %s, want %s", tc.remote, tc.xff, got, tc.want)
		}
	}
}

// counted is how many failures recs count in all.
func counted(recs []audit.Record) int {
	n := 0
	for _, r := range recs {
		n += r.Count
	}
	return n
}
