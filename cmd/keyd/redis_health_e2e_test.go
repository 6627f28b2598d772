package main

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/keyd-dev/keyd/backends/file"
	"github.com/keyd-dev/keyd/internal/testredis"
)

// Redis gone: revoking answers 503 store_unavailable, and /readyz says the
// token state (not the key store) is unavailable; Redis back: /readyz is
// ready again within seconds, without waiting for a write. It named the key store
// and stayed degraded until the next write.
func TestReadyzFollowsRedis(t *testing.T) {
	srv := testredis.Start(t)
	dir := t.TempDir()
	masterKey, _ := file.NewMasterKey()
	cfg := writeKeydConfig(t, dir, fmt.Sprintf("  token_state: {backend: redis, url: %q}", srv.URL), "")
	d := startDaemon(t, []string{"KEYD_MASTER_KEY=" + masterKey}, "--config", cfg)
	rec := &recorder{}
	srv.Stop()
	status, body, _ := rec.call(t, "POST", d.addr+"/v1/keysets/es/revocations", adminToken, fmt.Sprintf(`{"jti":"x","exp":%d}`, time.Now().Add(time.Minute).Unix()))
	if status != 503 || !strings.Contains(string(body), "store_unavailable") {
		t.Fatalf("revoking with Redis gone: %d %s", status, body)
	}
	_, ready, _ := rec.call(t, "GET", d.addr+"/readyz", adminToken, "")
	if !strings.Contains(string(ready), `"token_state":"unavailable"`) || !strings.Contains(string(ready), `"store":"ok"`) {
		t.Fatalf("/readyz with Redis gone: %s", ready)
	}
	metric := func() string {
		_, m, _ := rec.call(t, "GET", d.addr+"/metrics", "", "")
		for _, l := range strings.Split(string(m), "\n") {
			if strings.HasPrefix(l, "keyd_token_state_up ") || strings.HasPrefix(l, "keyd_store_up ") {
				return l
			}
		}
		return ""
	}
	if _, m, _ := rec.call(t, "GET", d.addr+"/metrics", "", ""); !strings.Contains(string(m), "keyd_token_state_up 0") || !strings.Contains(string(m), "keyd_store_up 1") {
		t.Fatalf("metrics with Redis gone: %s", metric())
	}
	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	back := time.Now()
	for { // /readyz probes a failed Redis at most once a second
		_, ready, _ = rec.call(t, "GET", d.addr+"/readyz", "", "")
		if strings.Contains(string(ready), `"status":"ready"`) {
			if _, m, _ := rec.call(t, "GET", d.addr+"/metrics", "", ""); !strings.Contains(string(m), "keyd_token_state_up 1") {
				t.Fatalf("metrics with Redis back: %s", metric())
			}
			break
		}
		if time.Since(back) > 5*time.Second {
			t.Fatalf("/readyz 5s after Redis came back: %s", ready)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// Again, with nobody asking /readyz: keyd probes Redis itself, and the
	// metric is back within seconds of Redis, without any write.
	srv.Stop()
	if status, _, _ := rec.call(t, "POST", d.addr+"/v1/keysets/es/revocations", adminToken, fmt.Sprintf(`{"jti":"y","exp":%d}`, time.Now().Add(time.Minute).Unix())); status != 503 {
		t.Fatalf("revoking with Redis gone again: %d", status)
	}
	up := func() string {
		_, m, _ := rec.call(t, "GET", d.addr+"/metrics", "", "")
		for _, l := range strings.Split(string(m), "\n") {
			if strings.HasPrefix(l, "keyd_token_state_up ") {
				return l
			}
		}
		return ""
	}
	// upWithin requires keyd_token_state_up 1 within d of now, with no
	// /readyz call and no write meanwhile.
	upWithin := func(d time.Duration, after string) {
		t.Helper()
		back := time.Now()
		for up() != "keyd_token_state_up 1" {
			if time.Since(back) > d {
				t.Fatalf("keyd_token_state_up %v after Redis %s, with no /readyz call and no write: %s", d, after, up())
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	if m := up(); m != "keyd_token_state_up 0" {
		t.Fatalf("metrics with Redis gone again: %s", m)
	}
	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	upWithin(3*time.Second, "came back")
	// Redis paused (SIGSTOP: connections hang, nothing is refused) and
	// resumed: up within 2 s, again without any write or /readyz call.
	if err := srv.Freeze(); err != nil {
		t.Fatal(err)
	}
	status, _, _ = rec.call(t, "POST", d.addr+"/v1/keysets/es/revocations", adminToken, fmt.Sprintf(`{"jti":"z","exp":%d}`, time.Now().Add(time.Minute).Unix()))
	if status != 503 || up() != "keyd_token_state_up 0" {
		_ = srv.Thaw()
		t.Fatalf("revoking with Redis paused: %d, %s", status, up())
	}
	if err := srv.Thaw(); err != nil {
		t.Fatal(err)
	}
	upWithin(2*time.Second, "resumed")
}
