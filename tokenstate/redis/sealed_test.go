package redis_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/keyd-dev/keyd/internal/testredis"
	"github.com/keyd-dev/keyd/tokenstate"
	"github.com/keyd-dev/keyd/tokenstate/redis"
	"github.com/keyd-dev/keyd/tokenstate/sealed"
	"github.com/keyd-dev/keyd/tokenstate/tokenstatetest"
)

// sealedStore is a Store sealing its entries under key, counting refusals.
func sealedStore(t *testing.T, srv *testredis.Server, prefix string, key []byte, rejected *atomic.Int64) *redis.Store {
	t.Helper()
	s := redis.New(client(t, srv), prefix)
	recs, err := sealed.New(s.Records(), key, nil)
	if err != nil {
		t.Fatal(err)
	}
	s.SealWith(recs.Entries("revocation"), func() { rejected.Add(1) })
	return s
}

func newKey(t *testing.T) []byte {
	k := make([]byte, 32)
	_, _ = rand.Read(k)
	return k
}

// The conformance suite with sealed entries.
func TestSealedConformance(t *testing.T) {
	srv := testredis.Start(t)
	key := newKey(t)
	n := 0
	tokenstatetest.Run(t, func(t *testing.T) tokenstate.Store {
		n++
		return sealedStore(t, srv, fmt.Sprintf("s%d:", n), key, new(atomic.Int64))
	})
}

// TestForgedRevocationsRefused: an entry a Redis writer sets (in clear, or
// sealed for another id, or under another key), and a revocation it
// publishes, are refused and counted; a Redis reader sees no subject.
func TestForgedRevocationsRefused(t *testing.T) {
	srv := testredis.Start(t)
	ctx := context.Background()
	c := client(t, srv)
	var rejected atomic.Int64
	key := newKey(t)
	s := sealedStore(t, srv, "f:", key, &rejected)
	exp := time.Now().Add(time.Hour)
	real := tokenstate.Revocation{KeySet: "a", Subject: "alice@example.com", Before: time.Now(), Expires: exp, RevokedAt: time.Now()}
	if _, err := s.PutRevocation(ctx, real); err != nil {
		t.Fatal(err)
	}
	raw, err := c.Get(ctx, "f:{rev}:"+real.ID()).Bytes()
	if err != nil || bytes.Contains(raw, []byte("alice")) {
		t.Fatalf("a Redis reader reads the subject: %q %v", raw, err)
	}
	// An attacker's entries: in clear; a sealed value moved to another id;
	// sealed under another key.
	forged := tokenstate.Revocation{KeySet: "a", JTI: "victim-token", Expires: exp, RevokedAt: time.Now()}
	clear, _ := json.Marshal(map[string]any{"keyset": "a", "jti": "victim-token", "expires_ms": exp.UnixMilli()})
	other := sealedStore(t, srv, "g:", newKey(t), new(atomic.Int64))
	if _, err := other.PutRevocation(ctx, forged); err != nil {
		t.Fatal(err)
	}
	foreign, _ := c.Get(ctx, "g:{rev}:"+forged.ID()).Bytes()
	moved := tokenstate.Revocation{KeySet: "a", JTI: "moved", Expires: exp}
	for id, v := range map[string][]byte{forged.ID(): clear, moved.ID(): raw, "a.j.foreign": foreign} {
		if err := c.Set(ctx, "f:{rev}:"+id, v, time.Hour).Err(); err != nil {
			t.Fatal(err)
		}
		if err := c.ZAdd(ctx, "f:{rev}", redisZ(exp, id)).Err(); err != nil {
			t.Fatal(err)
		}
	}
	got, err := tokenstate.All(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Subject != real.Subject {
		t.Fatalf("entries read: %+v, want only the one keyd wrote", got)
	}
	if rejected.Load() != 3 {
		t.Fatalf("%d refusals counted, want 3", rejected.Load())
	}

	// Published: a forged message is refused, a real one heard.
	heard := make(chan tokenstate.Revocation, 4)
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ready := make(chan struct{}, 1)
	go func() {
		_ = s.Watch(wctx, func(r tokenstate.Revocation) { heard <- r }, func(context.Context) error { ready <- struct{}{}; return nil })
	}()
	<-ready
	if err := c.Publish(ctx, "f:revocations", string(clear)).Err(); err != nil {
		t.Fatal(err)
	}
	if err := c.Publish(ctx, "f:revocations", forged.ID()+" "+string(foreign)).Err(); err != nil {
		t.Fatal(err)
	}
	second := tokenstate.Revocation{KeySet: "a", JTI: "real-2", Expires: exp, RevokedAt: time.Now()}
	if _, err := s.PutRevocation(ctx, second); err != nil {
		t.Fatal(err)
	}
	if r := <-heard; r.JTI != "real-2" { // pub/sub keeps order: the forged ones came first
		t.Fatalf("heard %+v first, want the real revocation", r)
	}
	if rejected.Load() != 5 {
		t.Fatalf("%d refusals counted, want 5 (two forged messages)", rejected.Load())
	}
}

// TestSealOld: entries an earlier keyd wrote in clear are sealed once and
// read as before; an entry in clear set afterwards is refused.
func TestSealOld(t *testing.T) {
	srv := testredis.Start(t)
	ctx := context.Background()
	old := redis.New(client(t, srv), "o:")
	exp := time.Now().Add(time.Hour)
	for i := range 100 {
		if _, err := old.PutRevocation(ctx, tokenstate.Revocation{KeySet: "a", JTI: fmt.Sprint("old-", i), Expires: exp, RevokedAt: time.Now()}); err != nil {
			t.Fatal(err)
		}
	}
	var rejected atomic.Int64
	s := sealedStore(t, srv, "o:", newKey(t), &rejected)
	n, err := s.SealOld(ctx)
	if err != nil || n != 100 {
		t.Fatalf("SealOld = %d, %v; want 100", n, err)
	}
	if _, err := old.PutRevocation(ctx, tokenstate.Revocation{KeySet: "a", JTI: "slipped-in", Expires: exp}); err != nil {
		t.Fatal(err)
	}
	got, err := tokenstate.All(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 100 || rejected.Load() != 1 {
		t.Fatalf("%d entries read, %d refused; want the 100 sealed and the one in clear refused", len(got), rejected.Load())
	}
}

func redisZ(exp time.Time, id string) goredis.Z {
	return goredis.Z{Score: float64(exp.UnixMilli()), Member: id}
}

// BenchmarkPutRevocation: a token's revocation written on a real
// redis-server, in clear (merged by the Lua script) and sealed (read,
// merged in keyd, written with compare-and-swap), alternated in one run;
// one writer per processor, then 16.
func BenchmarkPutRevocation(b *testing.B) {
	srv := testredis.Start(b)
	rdb := goredis.NewClient(&goredis.Options{Addr: srv.Addr})
	b.Cleanup(func() { _ = rdb.Close() })
	clear := redis.New(rdb, "bc:")
	sealedS := redis.New(rdb, "bs:")
	recs, err := sealed.New(sealedS.Records(), make([]byte, 32), nil)
	if err != nil {
		b.Fatal(err)
	}
	sealedS.SealWith(recs.Entries("revocation"), nil)
	var n atomic.Int64
	exp := time.Now().Add(time.Hour)
	for _, callers := range []int{1, 16} {
		for _, c := range []struct {
			name string
			s    *redis.Store
		}{{"clear", clear}, {"sealed", sealedS}, {"clear", clear}, {"sealed", sealedS}} {
			b.Run(fmt.Sprintf("%s/goroutines=%d", c.name, callers*runtime.GOMAXPROCS(0)), func(b *testing.B) {
				b.SetParallelism(callers)
				b.RunParallel(func(pb *testing.PB) {
					ctx := context.Background()
					for pb.Next() {
						r := tokenstate.Revocation{KeySet: "a", JTI: fmt.Sprint("j", n.Add(1)), Expires: exp, RevokedAt: time.Now()}
						if _, err := c.s.PutRevocation(ctx, r); err != nil {
							b.Error(err)
							return
						}
					}
				})
			})
		}
	}
}
