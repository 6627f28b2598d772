package tokenstate_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/keyd-dev/keyd/tokenstate"
)

var now = time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)

func claims(jti, sub string, iat int64) map[string]any {
	c := map[string]any{"jti": jti, "sub": sub}
	if iat != 0 {
		c["iat"] = json.Number(fmt.Sprint(iat))
	}
	return c
}

func TestIndexRules(t *testing.T) {
	x := tokenstate.NewIndex()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(x.Add(tokenstate.Revocation{KeySet: "a", JTI: "stolen", Expires: now.Add(time.Hour)}, 0))
	must(x.Add(tokenstate.Revocation{KeySet: "a", Subject: "alice", Before: now, Expires: now.Add(time.Hour)}, 0))
	for name, tc := range map[string]struct {
		keyset string
		c      map[string]any
		want   bool
	}{
		"listed jti":              {"a", claims("stolen", "x", now.Unix()), true},
		"same jti, other key set": {"b", claims("stolen", "x", now.Unix()), false},
		"subject before cut-off":  {"a", claims("j1", "alice", now.Unix()-60), true},
		"subject at cut-off":      {"a", claims("j1", "alice", now.Unix()), true},
		"subject after cut-off":   {"a", claims("j1", "alice", now.Unix()+1), false},
		"subject without iat":     {"a", claims("j1", "alice", 0), true},
		"another subject":         {"a", claims("j1", "bob", now.Unix()-60), false},
		"subject, other key set":  {"b", claims("j1", "alice", now.Unix()-60), false},
	} {
		if got, _ := x.Revoked(tc.keyset, tc.c); got != tc.want {
			t.Errorf("%s: revoked %v, want %v", name, got, tc.want)
		}
	}
	// Expired entries are pruned.
	v := x.Version("a")
	if n := x.Prune(now.Add(2 * time.Hour)); n != 2 || x.Len("a") != 0 || x.Version("a") == v {
		t.Errorf("pruned %d, %d left, version %d (was %d)", n, x.Len("a"), x.Version("a"), v)
	}
}

func TestIndexLimitAndMerge(t *testing.T) {
	x := tokenstate.NewIndex()
	for i := range 3 {
		if err := x.Add(tokenstate.Revocation{KeySet: "a", JTI: fmt.Sprint(i), Expires: now.Add(time.Hour)}, 3); err != nil {
			t.Fatal(err)
		}
	}
	if err := x.Add(tokenstate.Revocation{KeySet: "a", JTI: "3", Expires: now.Add(time.Hour)}, 3); !errors.Is(err, tokenstate.ErrLimit) {
		t.Fatalf("past the limit: %v", err)
	}
	// The same token again merges, and is no new entry.
	if err := x.Add(tokenstate.Revocation{KeySet: "a", JTI: "0", Expires: now.Add(2 * time.Hour)}, 3); err != nil || x.Len("a") != 3 {
		t.Fatalf("merge at the limit: %v, %d entries", err, x.Len("a"))
	}
	tokens, _ := x.Entries("a", now.Add(90*time.Minute))
	if len(tokens) != 1 || tokens[0].JTI != "0" {
		t.Fatalf("entries in force after 90 minutes: %+v", tokens)
	}
}

func TestIndexConcurrent(t *testing.T) {
	x := tokenstate.NewIndex()
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 1000 {
				_ = x.Add(tokenstate.Revocation{KeySet: "a", JTI: fmt.Sprintf("%d-%d", w, i), Expires: now.Add(time.Hour)}, 0)
				x.Revoked("a", claims(fmt.Sprintf("%d-%d", w, i/2), "s", 1))
			}
		}()
	}
	wg.Wait()
	if x.Len("a") != 8000 {
		t.Fatalf("%d entries", x.Len("a"))
	}
}

// TestIndexSince: the entries revoked since a time, in any order of
// arrival (a replica's come late), each once however often merged, none
// that expired; beyond the horizon, not ok; Prune trims the log.
func TestIndexSince(t *testing.T) {
	x := tokenstate.NewIndex()
	clock := now
	x.SetClock(func() time.Time { return clock })
	x.SetHorizon("a", time.Hour)
	add := func(r tokenstate.Revocation) {
		t.Helper()
		r.KeySet = "a"
		if r.Expires.IsZero() {
			r.Expires = now.Add(2 * time.Hour)
		}
		if err := x.Add(r, 0); err != nil {
			t.Fatal(err)
		}
	}
	add(tokenstate.Revocation{JTI: "old", RevokedAt: now.Add(-2 * time.Hour)}) // before the horizon: not logged
	add(tokenstate.Revocation{JTI: "t1", RevokedAt: now.Add(-30 * time.Minute)})
	add(tokenstate.Revocation{JTI: "t3", RevokedAt: now.Add(-5 * time.Minute)})
	add(tokenstate.Revocation{JTI: "t2", RevokedAt: now.Add(-10 * time.Minute)}) // late
	add(tokenstate.Revocation{JTI: "t3", RevokedAt: now.Add(-5 * time.Minute)})  // again
	add(tokenstate.Revocation{Subject: "alice", Before: now, RevokedAt: now.Add(-time.Minute)})
	add(tokenstate.Revocation{JTI: "gone", RevokedAt: now.Add(-2 * time.Minute), Expires: now.Add(-time.Second)})
	names := func(rs []tokenstate.Revocation) (out []string) {
		for _, r := range rs {
			out = append(out, r.JTI+r.Subject)
		}
		return out
	}
	tokens, subjects, ok := x.Since("a", now.Add(-15*time.Minute), now)
	if !ok || fmt.Sprint(names(tokens)) != "[t2 t3]" || fmt.Sprint(names(subjects)) != "[alice]" {
		t.Fatalf("since 15m: %v %v %v", ok, names(tokens), names(subjects))
	}
	if _, _, ok := x.Since("a", now.Add(-61*time.Minute), now); ok {
		t.Fatal("a since beyond the horizon answered")
	}
	if tokens, _, ok := x.Since("b", now.Add(-time.Minute), now); !ok || len(tokens) != 0 {
		t.Fatalf("another key set: %v", names(tokens))
	}
	// 31 minutes on, t1 is beyond the horizon and leaves the log.
	clock = now.Add(31 * time.Minute)
	x.Prune(clock)
	tokens, _, _ = x.Since("a", now.Add(-40*time.Minute), now.Add(-20*time.Minute)) // the log as seen earlier
	if fmt.Sprint(names(tokens)) != "[t2 t3]" {
		t.Fatalf("after Prune: %v", names(tokens))
	}
}

// TestIndexKeepsStringsThroughPrune: entries hold their jti, subject and
// reason through merges, prunes and the arena's compaction.
func TestIndexKeepsStringsThroughPrune(t *testing.T) {
	x := tokenstate.NewIndex()
	for i := range 10_000 {
		exp := now.Add(time.Hour)
		if i%4 != 0 {
			exp = now.Add(-time.Minute) // three in four have expired
		}
		r := tokenstate.Revocation{KeySet: "a", JTI: fmt.Sprint("jti-", i), Expires: exp, RevokedAt: now, Reason: fmt.Sprint("reason ", i)}
		if i%10 == 0 {
			r = tokenstate.Revocation{KeySet: "a", Subject: fmt.Sprint("user-", i), Before: now, Expires: exp, RevokedAt: now, Reason: fmt.Sprint("reason ", i)}
		}
		if err := x.Add(r, 0); err != nil {
			t.Fatal(err)
		}
	}
	// A later revocation of the same token: the new reason, the later exp.
	if err := x.Add(tokenstate.Revocation{KeySet: "a", JTI: "jti-4", Expires: now.Add(2 * time.Hour), RevokedAt: now, Reason: "again"}, 0); err != nil {
		t.Fatal(err)
	}
	if n := x.Prune(now); n != 7500 {
		t.Fatalf("pruned %d", n)
	}
	tokens, subjects := x.Entries("a", now)
	if len(tokens)+len(subjects) != 2500 || x.Len("a") != 2500 {
		t.Fatalf("%d tokens, %d subjects left (Len %d)", len(tokens), len(subjects), x.Len("a"))
	}
	for _, r := range append(tokens, subjects...) {
		var i int
		if _, err := fmt.Sscanf(r.JTI+r.Subject, "jti-%d", &i); err != nil {
			if _, err := fmt.Sscanf(r.Subject, "user-%d", &i); err != nil {
				t.Fatalf("entry %+v", r)
			}
		}
		want := fmt.Sprint("reason ", i)
		if i == 4 {
			want = "again"
			if !r.Expires.Equal(now.Add(2 * time.Hour)) {
				t.Fatalf("merged exp %v", r.Expires)
			}
		}
		if r.Reason != want || i%4 != 0 || r.KeySet != "a" || !r.RevokedAt.Equal(now) {
			t.Fatalf("entry %+v", r)
		}
	}
}

// BenchmarkIndexMemory reports the heap an entry takes with 1,000,000 in
// force (a tenth of them subjects, revoked over the last day, so a
// twenty-fourth are in the recent log).
func BenchmarkIndexMemory(b *testing.B) {
	for b.Loop() {
		var m0, m1 runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&m0)
		x := tokenstate.NewIndex()
		start := time.Now()
		for i := range 1_000_000 {
			r := tokenstate.Revocation{KeySet: "app", JTI: fmt.Sprintf("%022d", i), Expires: start.Add(time.Hour), RevokedAt: start.Add(-time.Duration(i%1440) * time.Minute), Reason: "logout"}
			if i%10 == 0 {
				r = tokenstate.Revocation{KeySet: "app", Subject: fmt.Sprint("user-", i, "@example.com"), Before: start, Expires: start.Add(time.Hour), RevokedAt: r.RevokedAt}
			}
			if err := x.Add(r, 0); err != nil {
				b.Fatal(err)
			}
		}
		runtime.GC()
		runtime.ReadMemStats(&m1)
		b.ReportMetric(float64(m1.HeapInuse-m0.HeapInuse)/1_000_000, "heap-bytes/entry")
		runtime.KeepAlive(x)
	}
}
