package refresh_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/keyd-dev/keyd/internal/testredis"
	"github.com/keyd-dev/keyd/refresh"
	"github.com/keyd-dev/keyd/tokenstate/redis"
)

// Logins on a real redis-server: two replicas (two services on one Redis)
// presented the same refresh token at once give exactly one new pair and
// one refresh_token_reused, and the login's key expires by itself.
func TestRefreshOnRedis(t *testing.T) {
	srv := testredis.Start(t)
	_, sg, c, _ := setup(t)
	c.Add(time.Since(c.Now())) // Redis expires keys by the real clock
	settings := func(string) (refresh.Settings, bool) { return refresh.Settings{TTL: time.Hour}, true }
	newService := func() *refresh.Service {
		cl := goredis.NewClient(&goredis.Options{Addr: srv.Addr})
		t.Cleanup(func() { _ = cl.Close() })
		return refresh.New(redis.New(cl, "rt:").Records(), sg, c.Now, settings)
	}
	a, b := newService(), newService()
	ctx := context.Background()
	login, err := a.Issue(ctx, "app", claims)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	results := make([]error, 8)
	for i := range results {
		svc := a
		if i%2 == 1 {
			svc = b
		}
		wg.Go(func() { _, results[i] = svc.Refresh(ctx, "app", login.RefreshToken) })
	}
	wg.Wait()
	ok, reused := 0, 0
	for _, err := range results {
		switch {
		case err == nil:
			ok++
		case errors.Is(err, refresh.ErrReused), errors.Is(err, refresh.ErrRevoked):
			reused++
		default:
			t.Errorf("refresh: %v", err)
		}
	}
	if ok != 1 || reused != 7 {
		t.Fatalf("%d new pairs and %d refused of 8 racing refreshes", ok, reused)
	}
	cl := goredis.NewClient(&goredis.Options{Addr: srv.Addr})
	defer cl.Close()
	keys, _ := cl.Keys(ctx, "rt:rec:refresh:*").Result()
	if len(keys) != 1 {
		t.Fatalf("login keys: %v", keys)
	}
	if ttl, err := cl.PTTL(ctx, keys[0]).Result(); err != nil || ttl <= 0 || ttl > 25*time.Hour+time.Hour {
		t.Fatalf("the login's expiry: %v %v", ttl, err)
	}
	// Redis expires logins itself: the hourly prune lists none of them
	// (with a million logins, a sweep would read them all).
	before := srv.Calls(t, "scan")
	if n, err := a.Prune(ctx); err != nil || n != 0 {
		t.Fatalf("prune on Redis: %d %v", n, err)
	}
	if got := srv.Calls(t, "scan") - before; got != 0 {
		t.Fatalf("prune on Redis ran %d SCANs", got)
	}
}
