package main

import (
	"context"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/keyd-dev/keyd/backends/file"
	"github.com/keyd-dev/keyd/internal/testredis"
)

// TestRedisFrozenUnderLoad: Redis frozen (SIGSTOP) for six seconds while
// token pairs, refreshes and revocations arrive from eight callers: every
// answer is a success (one that waited for Redis to come back) or a 503
// store_unavailable, never a 500; every acknowledged revocation holds,
// every acknowledged login refreshes once Redis is back, and no login is
// in Redis that nobody was given.
func TestRedisFrozenUnderLoad(t *testing.T) {
	srv := testredis.Start(t)
	dir := t.TempDir()
	mk, _ := file.NewMasterKey()
	env := []string{"KEYD_MASTER_KEY=" + mk}
	cfg := writeKeydConfig(t, dir, fmt.Sprintf("  token_state: {backend: redis, url: %q}", srv.URL), ", refresh: {ttl: 1h}")
	d := startDaemon(t, env, "--config", cfg)
	w := &tokenWorld{t: t, rec: &recorder{}}

	var mu sync.Mutex
	statuses := map[string]int{}
	var revoked, logins []string // acknowledged: tokens revoked, refresh tokens held
	var slowest time.Duration
	answer := func(what string, status int, body string) bool {
		mu.Lock()
		defer mu.Unlock()
		key := fmt.Sprintf("%s %d", what, status)
		if status == 503 {
			key += " " + regexp.MustCompile(`"code":"([a-z_]+)"`).FindStringSubmatch(body)[1]
		}
		statuses[key]++
		return status == 200
	}
	call := func(d *daemonProc, path, token, body string) (int, string) {
		began := time.Now()
		status, out := call(d, path, token, body)
		mu.Lock()
		slowest = max(slowest, time.Since(began))
		mu.Unlock()
		return status, out
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				switch (i + n) % 3 {
				case 0:
					status, body := call(d, "/v1/keysets/es/token-pair", serviceToken, `{"claims":{"sub":"u"}}`)
					if answer("token-pair", status, body) {
						mu.Lock()
						logins = append(logins, w.field(body, "refresh_token"))
						mu.Unlock()
					}
				case 1:
					mu.Lock()
					var rt string
					if len(logins) > 0 {
						rt, logins = logins[len(logins)-1], logins[:len(logins)-1]
					}
					mu.Unlock()
					if rt == "" {
						continue
					}
					status, body := call(d, "/v1/keysets/es/refresh", serviceToken, `{"refresh_token":"`+rt+`"}`)
					if answer("refresh", status, body) {
						mu.Lock()
						logins = append(logins, w.field(body, "refresh_token"))
						mu.Unlock()
					} else if status == 503 { // not spent: the login keeps this token
						mu.Lock()
						logins = append(logins, rt)
						mu.Unlock()
					}
				case 2:
					tok := w.sign(d, fmt.Sprint("r", i, "-", n))
					status, body := call(d, "/v1/keysets/es/revocations", adminToken, fmt.Sprintf(`{"jti":%q,"exp":%d}`, jtiOf(t, tok), time.Now().Add(10*time.Minute).Unix()))
					if answer("revoke", status, body) {
						mu.Lock()
						revoked = append(revoked, tok)
						mu.Unlock()
					}
				}
			}
		})
	}
	time.Sleep(500 * time.Millisecond) // load before the freeze
	if err := srv.Freeze(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(6 * time.Second) // the freeze: as the chaos run that found the 500s
	if err := srv.Thaw(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second) // load after it
	close(stop)
	wg.Wait()
	t.Logf("answers: %v (slowest %v)", statuses, slowest)
	for k := range statuses {
		if !strings.HasSuffix(k, " 200") && !strings.HasSuffix(k, " 503 store_unavailable") {
			t.Errorf("answer %q during a Redis freeze", k)
		}
	}
	if slowest < 3*time.Second {
		t.Fatalf("no request met the frozen Redis (slowest %v): %v", slowest, statuses)
	}
	for _, tok := range revoked {
		_, body := w.call(d, "/v1/keysets/es/verify", serviceToken, `{"token":"`+tok+`"}`)
		if !strings.Contains(body, "token_revoked") {
			t.Fatalf("an acknowledged revocation does not hold: %s", body)
		}
	}
	for _, rt := range logins {
		if status, body := w.call(d, "/v1/keysets/es/refresh", serviceToken, `{"refresh_token":"`+rt+`"}`); status != 200 {
			t.Fatalf("an acknowledged login does not refresh: %d %s", status, body)
		}
	}
	rdb := goredis.NewClient(&goredis.Options{Addr: srv.Addr})
	defer rdb.Close()
	keys, err := rdb.Keys(context.Background(), "keyd:rec:refresh:*").Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != statuses["token-pair 200"] {
		t.Fatalf("%d logins in Redis, %d acknowledged: orphans left behind", len(keys), statuses["token-pair 200"])
	}
	d.stop()
}

// call posts body to d with token, without failing the test on a 5xx.
func call(d *daemonProc, path, token, body string) (int, string) {
	req, _ := http.NewRequest("POST", d.addr+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	var b strings.Builder
	_, _ = fmt.Fprint(&b, "")
	buf := make([]byte, 64<<10)
	for {
		n, err := resp.Body.Read(buf)
		b.Write(buf[:n])
		if err != nil {
			break
		}
	}
	return resp.StatusCode, b.String()
}
