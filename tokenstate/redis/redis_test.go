package redis_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/keyd-dev/keyd/backends/file"
	"github.com/keyd-dev/keyd/internal/testredis"
	"github.com/keyd-dev/keyd/keystore"
	"github.com/keyd-dev/keyd/keystore/keystoretest"
	"github.com/keyd-dev/keyd/rotation"
	"github.com/keyd-dev/keyd/tokenstate"
	"github.com/keyd-dev/keyd/tokenstate/redis"
	"github.com/keyd-dev/keyd/tokenstate/sealed"
	"github.com/keyd-dev/keyd/tokenstate/tokenstatetest"
)

func client(t *testing.T, srv *testredis.Server) goredis.UniversalClient {
	c := goredis.NewUniversalClient(&goredis.UniversalOptions{Addrs: []string{srv.Addr}, MaxRetries: -1, DialTimeout: time.Second})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// The conformance suite on a real redis-server; each store has its own
// prefix, as deployments sharing a Redis would.
func TestConformance(t *testing.T) {
	srv := testredis.Start(t)
	n := 0
	tokenstatetest.Run(t, func(t *testing.T) tokenstate.Store {
		n++
		return redis.New(client(t, srv), "t"+string(rune('a'+n))+":")
	})
}

// Redis expires entries itself at their Expires.
func TestNativeExpiry(t *testing.T) {
	srv := testredis.Start(t)
	c := client(t, srv)
	s := redis.New(c, "x:")
	ctx := context.Background()
	r := tokenstate.Revocation{KeySet: "a", JTI: "j", Expires: time.Now().Add(time.Hour)}
	if _, err := s.PutRevocation(ctx, r); err != nil {
		t.Fatal(err)
	}
	ttl, err := c.PTTL(ctx, "x:{rev}:"+r.ID()).Result()
	if err != nil || ttl <= 59*time.Minute || ttl > time.Hour {
		t.Fatalf("the key's expiry: %v %v", ttl, err)
	}
}

// A revocation made through one replica reaches the other's index through
// pub/sub, and a replica cut from Redis catches up when it is back.
func TestWatchAndResync(t *testing.T) {
	srv := testredis.Start(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	writer := redis.New(client(t, srv), "w:")
	reader := redis.New(client(t, srv), "w:")
	x := tokenstate.NewIndex()
	var resyncs sync.WaitGroup
	resyncs.Add(1)
	first := sync.OnceFunc(resyncs.Done)
	go func() {
		_ = reader.Watch(ctx, func(r tokenstate.Revocation) { _ = x.Add(r, 0) }, func(ctx context.Context) error {
			all, err := tokenstate.All(ctx, reader)
			for _, r := range all {
				_ = x.Add(r, 0)
			}
			first()
			return err
		})
	}()
	resyncs.Wait()
	exp := time.Now().Add(time.Hour)
	if _, err := writer.PutRevocation(ctx, tokenstate.Revocation{KeySet: "a", JTI: "live", Expires: exp}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return x.Has(tokenstate.Revocation{KeySet: "a", JTI: "live"}) }, "the published revocation")

	// Redis goes away: writes fail as unavailable; it comes back (empty,
	// persistence is off here) and a revocation made then reaches the
	// reader after its reconnect.
	srv.Stop()
	if _, err := writer.PutRevocation(ctx, tokenstate.Revocation{KeySet: "a", JTI: "lost", Expires: exp}); !errors.Is(err, keystore.ErrUnavailable) {
		t.Fatalf("a write with Redis down: %v", err)
	}
	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool {
		_, err := writer.PutRevocation(ctx, tokenstate.Revocation{KeySet: "a", JTI: "after", Expires: exp})
		return err == nil && x.Has(tokenstate.Revocation{KeySet: "a", JTI: "after"})
	}, "a revocation after the reconnect")
	if !x.Has(tokenstate.Revocation{KeySet: "a", JTI: "live"}) {
		t.Fatal("the index lost what it knew while Redis was away")
	}
}

// waitFor polls an asynchronous outcome (pub/sub delivery, a reconnect)
// until a deadline: nothing waits for time to pass.
func waitFor(t *testing.T, ok func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("%s did not arrive within 10 s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// The record store conformance suite on a real redis-server: refresh
// token logins live there with token_state on Redis.
func TestRecordConformance(t *testing.T) {
	srv := testredis.Start(t)
	n := 0
	keystoretest.RunRecords(t, func(t *testing.T) keystore.RecordStore {
		n++
		return redis.New(client(t, srv), fmt.Sprintf("r%d:", n)).Records()
	})
}

// Watch returns when its context is cancelled, even while it waits for a
// message (keyd's shutdown waits for it).
func TestWatchStopsOnCancel(t *testing.T) {
	srv := testredis.Start(t)
	s := redis.New(client(t, srv), "c:")
	ctx, cancel := context.WithCancel(context.Background())
	subscribed := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = s.Watch(ctx, func(tokenstate.Revocation) {}, func(context.Context) error { close(subscribed); return nil })
	}()
	<-subscribed
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Watch did not return after its context was cancelled")
	}
}

// Through Sentinel: Open with a master_name url finds the master and the
// engine works as on one node.
func TestSentinel(t *testing.T) {
	srv := testredis.Start(t)
	sentinel := testredis.StartSentinel(t, srv)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var s *redis.Store
	var err error
	for s == nil { // the sentinel needs a moment to know its master
		if s, err = redis.Open(ctx, redis.Options{URL: "redis://" + sentinel + "/0?master_name=keyd", Prefix: "s:"}); err != nil {
			if ctx.Err() != nil {
				t.Fatalf("open through sentinel: %v", err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	defer s.Close()
	if _, err := s.PutRevocation(ctx, tokenstate.Revocation{KeySet: "a", JTI: "j", Expires: time.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	// The write reached the master itself.
	if n, err := client(t, srv).Exists(ctx, "s:{rev}:"+tokenstate.Revocation{KeySet: "a", JTI: "j"}.ID()).Result(); err != nil || n != 1 {
		t.Fatalf("the master holds %d keys, %v", n, err)
	}
}

// On a Redis Cluster of three masters: the conformance suites (revocations
// and refresh records) pass, and a revocation written through one client
// reaches a watcher on another (PUBLISH crosses the cluster's nodes).
func TestCluster(t *testing.T) {
	url := testredis.StartCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	open := func(t *testing.T, prefix string) *redis.Store {
		s, err := redis.Open(ctx, redis.Options{URL: url, Prefix: prefix})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	n := 0
	tokenstatetest.Run(t, func(t *testing.T) tokenstate.Store {
		n++
		return open(t, fmt.Sprintf("c%d:", n))
	})
	keystoretest.RunRecords(t, func(t *testing.T) keystore.RecordStore {
		n++
		return open(t, fmt.Sprintf("c%d:", n)).Records()
	})
	sealKey := make([]byte, 32)
	tokenstatetest.Run(t, func(t *testing.T) tokenstate.Store { // sealed entries: a GET, then the script, in one slot
		n++
		s := open(t, fmt.Sprintf("c%d:", n))
		recs, err := sealed.New(s.Records(), sealKey, nil)
		if err != nil {
			t.Fatal(err)
		}
		s.SealWith(recs.Entries("revocation"), nil)
		return s
	})
	writer, reader := open(t, "w:"), open(t, "w:")
	x := tokenstate.NewIndex()
	synced := make(chan struct{})
	once := sync.OnceFunc(func() { close(synced) })
	go func() {
		_ = reader.Watch(ctx, func(r tokenstate.Revocation) { _ = x.Add(r, 0) }, func(ctx context.Context) error {
			err := reader.Revocations(ctx, func(r tokenstate.Revocation) { _ = x.Add(r, 0) })
			once()
			return err
		})
	}()
	for i := range 50 { // keys in every node's slots, before the watch
		if _, err := writer.PutRevocation(ctx, tokenstate.Revocation{KeySet: "a", JTI: fmt.Sprint("before-", i), Expires: time.Now().Add(time.Hour)}); err != nil {
			t.Fatal(err)
		}
	}
	<-synced
	if _, err := writer.PutRevocation(ctx, tokenstate.Revocation{KeySet: "a", JTI: "live", Expires: time.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return x.Has(tokenstate.Revocation{KeySet: "a", JTI: "live"}) }, "the published revocation")
	waitFor(t, func() bool { return x.Len("a") == 51 }, "every revocation, from every master")
}

// With the watch started first, as keyd does, the start-up load is the
// watch's first resynchronisation: the stored revocations are read once,
// not a second time right after start (with a million, a second pass took
// a core for seconds just as keyd became ready); a revocation published
// once Start has returned still reaches the index.
func TestStartReadsTheStateOnce(t *testing.T) {
	srv := testredis.Start(t)
	c := client(t, srv)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	writer := redis.New(c, "s:")
	exp := time.Now().Add(time.Hour)
	for i := range 3000 {
		if _, err := writer.PutRevocation(ctx, tokenstate.Revocation{KeySet: "app", JTI: fmt.Sprint("j", i), Expires: exp}); err != nil {
			t.Fatal(err)
		}
	}
	before := srv.Calls(t, "zscan")
	if err := writer.Revocations(ctx, func(tokenstate.Revocation) {}); err != nil {
		t.Fatal(err)
	}
	onePass := srv.Calls(t, "zscan") - before

	store, err := file.Open(file.Options{Path: filepath.Join(t.TempDir(), "keyd.db"), MasterKey: make([]byte, 32)})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	p := keystore.Policy{Name: "app", Algorithm: keystore.ES256, Rotation: "@daily", TokenTTL: 15 * time.Minute, JWKSMaxAge: 5 * time.Minute, Leeway: time.Minute}
	m := rotation.NewManager(rotation.Options{Store: store, Policies: []keystore.Policy{p}, Now: time.Now, TokenState: redis.New(client(t, srv), "s:")})
	watched := m.WatchRevocations(ctx)
	before = srv.Calls(t, "zscan")
	if err := m.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if n := m.Revocations().Len("app"); n != 3000 {
		t.Fatalf("the index holds %d of 3000 after start", n)
	}
	if _, err := writer.PutRevocation(ctx, tokenstate.Revocation{KeySet: "app", JTI: "after-start", Expires: exp}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return m.Revocations().Has(tokenstate.Revocation{KeySet: "app", JTI: "after-start"}) }, "a revocation after start")
	if got := srv.Calls(t, "zscan") - before; got != onePass {
		t.Fatalf("start and its watch ran %d ZSCANs; one pass over the state is %d", got, onePass)
	}
	cancel()
	<-watched
}

// pipelines counts the pipelines a client sends and the commands in them.
type pipelines struct {
	n, cmds atomic.Int64
}

func (h *pipelines) DialHook(next goredis.DialHook) goredis.DialHook          { return next }
func (h *pipelines) ProcessHook(next goredis.ProcessHook) goredis.ProcessHook { return next }
func (h *pipelines) ProcessPipelineHook(next goredis.ProcessPipelineHook) goredis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []goredis.Cmder) error {
		h.n.Add(1)
		h.cmds.Add(int64(len(cmds)))
		return next(ctx, cmds)
	}
}

// Commands given at once by concurrent callers leave together: 400
// concurrent login writes, then reads, then revocations take far fewer
// pipelines than commands, and every caller gets its own answer (the
// record it wrote, a conflict for the one stale write); a lone command
// leaves at once, alone. On a fresh server the scripts are not loaded
// yet: the first pipelined EVALSHA's NOSCRIPT loads them.
func TestConcurrentCommandsLeaveTogether(t *testing.T) {
	srv := testredis.Start(t)
	c := client(t, srv)
	h := &pipelines{}
	c.AddHook(h)
	s := redis.New(c, "p:")
	rs := s.Records()
	ctx := context.Background()
	const n = 400
	run := func(what string, op func(i int) error) {
		t.Helper()
		p0, c0 := h.n.Load(), h.cmds.Load()
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() { errs[i] = op(i) })
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("%s %d: %v", what, i, err)
			}
		}
		p, cmds := h.n.Load()-p0, h.cmds.Load()-c0
		if cmds < n || p > n/2 {
			t.Fatalf("%s: %d commands of %d callers in %d pipelines", what, cmds, n, p)
		}
		t.Logf("%s: %d commands in %d pipelines", what, cmds, p)
	}
	run("writes", func(i int) error {
		got, err := rs.PutRecord(ctx, "login", &keystore.Record{ID: fmt.Sprint("l", i), Data: []byte(fmt.Sprint("data ", i))})
		if err == nil && got.Version != 1 {
			return fmt.Errorf("version %d", got.Version)
		}
		return err
	})
	run("reads", func(i int) error {
		rec, err := rs.GetRecord(ctx, "login", fmt.Sprint("l", i))
		if err == nil && (string(rec.Data) != fmt.Sprint("data ", i) || rec.Version != 1) {
			return fmt.Errorf("read %q version %d", rec.Data, rec.Version)
		}
		return err
	})
	exp := time.Now().Add(time.Hour)
	run("revocations", func(i int) error {
		r, err := s.PutRevocation(ctx, tokenstate.Revocation{KeySet: "a", JTI: fmt.Sprint("j", i), Expires: exp, Reason: fmt.Sprint("r", i)})
		if err == nil && (r.JTI != fmt.Sprint("j", i) || r.Reason != fmt.Sprint("r", i)) {
			return fmt.Errorf("answered %+v", r)
		}
		return err
	})
	// A stale write among them is refused, and only it.
	if _, err := rs.PutRecord(ctx, "login", &keystore.Record{ID: "l7", Data: []byte("stale")}); !errors.Is(err, keystore.ErrConflict) {
		t.Fatalf("a stale write: %v", err)
	}
	if _, err := rs.GetRecord(ctx, "login", "missing"); !errors.Is(err, keystore.ErrNotFound) {
		t.Fatalf("a missing record: %v", err)
	}
	p0 := h.n.Load()
	if _, err := rs.GetRecord(ctx, "login", "l1"); err != nil || h.n.Load()-p0 != 1 {
		t.Fatalf("a lone read: %v, %d pipelines", err, h.n.Load()-p0)
	}
}

// Revocations written by a keyd before the index (one key each, no
// index) are moved under it at the first start: every one is loaded, its
// old key is gone, and an expired one is not brought back; later starts
// do not look for old keys again (no SCAN).
func TestOldLayoutMoves(t *testing.T) {
	srv := testredis.Start(t)
	c := client(t, srv)
	ctx := context.Background()
	exp := time.Now().Add(time.Hour).UnixMilli()
	for i := range 50 {
		r := tokenstate.Revocation{KeySet: "app", JTI: fmt.Sprint("old-", i)}
		val := fmt.Sprintf(`{"keyset":"app","jti":"old-%d","sub":"","before_ms":0,"expires_ms":%d,"revoked_ms":%d,"reason":"logout"}`, i, exp, exp-3600_000)
		if err := c.Set(ctx, "m:rev:"+r.ID(), val, time.Hour).Err(); err != nil {
			t.Fatal(err)
		}
	}
	s := redis.New(c, "m:")
	all, err := tokenstate.All(ctx, s)
	if err != nil || len(all) != 50 {
		t.Fatalf("after the move: %d entries, %v", len(all), err)
	}
	for _, r := range all {
		if r.Reason != "logout" || r.Expires.UnixMilli() != exp {
			t.Fatalf("moved entry %+v", r)
		}
	}
	if old, _ := c.Keys(ctx, "m:rev:*").Result(); len(old) != 0 {
		t.Fatalf("old keys left: %v", old)
	}
	if n, _ := c.ZCard(ctx, "m:{rev}").Result(); n != 50 {
		t.Fatalf("the index holds %d ids", n)
	}
	before := srv.Calls(t, "scan")
	if all, err := tokenstate.All(ctx, s); err != nil || len(all) != 50 {
		t.Fatalf("a second load: %d entries, %v", len(all), err)
	}
	if n := srv.Calls(t, "scan") - before; n != 0 {
		t.Fatalf("a second load scanned for old keys (%d SCANs)", n)
	}
}

// The client re-sends a write whose answer it lost (Redis ran it, the
// answer never came back: a stall past the read timeout, a connection
// cut): the compare-and-swap finds its own write, by the write's own id,
// and answers as if it had just made it. A token pair asked for while
// Redis stalled answered 500 ("record refresh ... was written by someone
// else") every time, and left its login behind. Two writers with the same
// data (two replicas spending one refresh token) still conflict.
func TestRetriedWriteIsTheSameWrite(t *testing.T) {
	srv := testredis.Start(t)
	p := newLosingProxy(t, srv.Addr)
	cl := goredis.NewClient(&goredis.Options{Addr: p.addr, MaxRetries: 3})
	t.Cleanup(func() { _ = cl.Close() })
	rs := redis.New(cl, "keyd:").Records()
	ctx := context.Background()
	if _, err := rs.PutRecord(ctx, "refresh", &keystore.Record{ID: "warm-up", Data: []byte("x")}); err != nil {
		t.Fatal(err) // the script loaded into Redis, the connection made
	}
	p.loseNextAnswer.Store(true)
	rec := &keystore.Record{ID: "login-1", Data: []byte(`{"generation":1}`), Expires: time.Now().Add(time.Hour)}
	first, err := rs.PutRecord(ctx, "refresh", rec)
	if err != nil || first.Version != 1 {
		t.Fatalf("a create whose answer was lost, retried by the client: %+v, %v; want version 1", first, err)
	}
	if p.lost.Load() != 1 {
		t.Fatalf("the proxy lost %d answers, want 1", p.lost.Load())
	}
	// Two writers of the same next state from the same version: one wins.
	next := &keystore.Record{ID: "login-1", Data: []byte(`{"generation":2}`), Version: 1}
	if _, err := rs.PutRecord(ctx, "refresh", next); err != nil {
		t.Fatal(err)
	}
	if _, err := rs.PutRecord(ctx, "refresh", next); !errors.Is(err, keystore.ErrConflict) {
		t.Fatalf("a second writer of the same data at the same version: %v, want a conflict", err)
	}
}

// losingProxy passes Redis traffic through, and when told, drops the
// answer to the next script call (EVALSHA) and closes the client's
// connection, as a stall past the read
// timeout does after Redis ran the command.
type losingProxy struct {
	addr           string
	loseNextAnswer atomic.Bool
	lost           atomic.Int32
}

func newLosingProxy(t *testing.T, upstream string) *losingProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	p := &losingProxy{addr: ln.Addr().String()}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", upstream)
			if err != nil {
				_ = c.Close()
				continue
			}
			var scriptSent atomic.Bool
			go pipe(c, u, func(b []byte) bool { // requests: note a script call while armed
				if p.loseNextAnswer.Load() && bytes.Contains(bytes.ToLower(b), []byte("evalsha")) {
					scriptSent.Store(true)
				}
				return true
			})
			go pipe(u, c, func([]byte) bool { // answers: lose the script's, once
				if scriptSent.Load() && p.loseNextAnswer.CompareAndSwap(true, false) {
					p.lost.Add(1)
					return false
				}
				return true
			})
		}
	}()
	return p
}

// pipe copies from to to, each read passed to pass first; when pass says
// false, or either side fails, both connections close.
func pipe(from, to net.Conn, pass func([]byte) bool) {
	defer from.Close()
	defer to.Close()
	buf := make([]byte, 64<<10)
	for {
		n, err := from.Read(buf)
		if n > 0 {
			if !pass(buf[:n]) {
				return
			}
			if _, werr := to.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}
