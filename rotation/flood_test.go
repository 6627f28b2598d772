package rotation_test

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/keyd-dev/keyd/backends/file"
	"github.com/keyd-dev/keyd/internal/testredis"
	"github.com/keyd-dev/keyd/keystore"
	"github.com/keyd-dev/keyd/rotation"
	"github.com/keyd-dev/keyd/signer"
	"github.com/keyd-dev/keyd/tokenstate/redis"
)

// Anyone who can publish on keyd's Redis channel floods it with
// revocations for a key set that does not exist, past max_revocations, and
// expiring in 2100: none of the unknown key set's is held, the key set
// keeps at most max_revocations, each expiry is brought back to its last
// token's, and every refusal is counted. They were all held, until 2100
// (300,000 took keyd from 194 to 391 MB).
func TestPublishedRevocationFloodIsBounded(t *testing.T) {
	srv := testredis.Start(t)
	rdb := goredis.NewClient(&goredis.Options{Addr: srv.Addr})
	t.Cleanup(func() { _ = rdb.Close() })
	store, err := file.Open(file.Options{Path: filepath.Join(t.TempDir(), "keyd.db"), MasterKey: make([]byte, 32)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const limit = 100
	p := keystore.Policy{Name: "app", Algorithm: keystore.ES256, Rotation: "@daily", TokenTTL: 10 * time.Minute, JWKSMaxAge: time.Minute, Leeway: 30 * time.Second, MaxRevocations: limit}
	sg := signer.New(time.Now, nil)
	var rejected atomic.Int64
	m := rotation.NewManager(rotation.Options{Store: store, Policies: []keystore.Policy{p}, Logger: slog.New(slog.DiscardHandler),
		Listeners: []rotation.Listener{sg}, TokenState: redis.New(rdb, "keyd:"), Revocations: sg.Revocations(),
		Rejected: func(string) { rejected.Add(1) }})
	done := m.WatchRevocations(ctx)
	if err := m.Start(ctx); err != nil {
		t.Fatal(err)
	}
	const ghosts, apps = 30_000, 500
	year2100 := time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC).UnixMilli()
	now := time.Now().UnixMilli()
	pipe := rdb.Pipeline()
	for i := range ghosts + apps {
		keyset := "ghost"
		if i >= ghosts {
			keyset = "app"
		}
		pipe.Publish(ctx, "keyd:revocations", fmt.Sprintf(`{"keyset":%q,"jti":"j%d","sub":"","before_ms":0,"expires_ms":%d,"revoked_ms":%d,"reason":""}`, keyset, i, year2100, now))
		if i%1000 == 999 {
			if _, err := pipe.Exec(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	want := int64(ghosts + apps - limit)
	deadline := time.Now().Add(2 * time.Minute)
	for rejected.Load() < want && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond) // waiting for the watch to read the channel, not for time to pass
	}
	revs := m.Revocations()
	if got := rejected.Load(); got != want {
		t.Fatalf("%d published revocations refused, want %d", got, want)
	}
	if n := revs.Len("ghost"); n != 0 {
		t.Fatalf("%d revocations held for a key set that does not exist", n)
	}
	if n := revs.Len("app"); n != limit {
		t.Fatalf("%d revocations held for app, want its max_revocations %d", n, limit)
	}
	tokens, _ := revs.Entries("app", time.Now())
	latest := time.Now().Add(p.TokenTTL + p.Leeway + 2*time.Second)
	for _, r := range tokens {
		if r.Expires.After(latest) {
			t.Fatalf("a published revocation is held until %s, past the key set's last token", r.Expires)
		}
	}
	cancel()
	<-done
}
