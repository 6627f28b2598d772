package main

import (
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/keyd-dev/keyd/backends/file"
	"github.com/keyd-dev/keyd/internal/testredis"
)

// Switching storage.token_state from the key store to Redis and back keeps
// every revocation and login: a token revoked by jti, every token of a
// subject, and a login that refreshes once after each switch. Before, the
// switch to Redis started empty (every revoked token verified again, every
// login was gone). Back to the key store, keyd refuses to start until
// keyd migrate-token-state brought Redis's state back.
func TestTokenStateMovesWithItsOwner(t *testing.T) {
	srv := testredis.Start(t)
	dir := t.TempDir()
	masterKey, _ := file.NewMasterKey()
	env := []string{"KEYD_MASTER_KEY=" + masterKey}
	var cfgPath string
	config := func(redis bool) {
		ts := ""
		if redis {
			ts = fmt.Sprintf("  token_state: {backend: redis, url: %q, prefix: \"mv:\"}", srv.URL)
		}
		cfgPath = writeKeydConfig(t, dir, ts, ", refresh: {ttl: 1h}")
	}
	rec := &recorder{}
	call := func(d *daemonProc, path, token, body string) (int, string) {
		t.Helper()
		status, out, _ := rec.call(t, "POST", d.addr+path, token, body)
		return status, string(out)
	}
	field := func(body, name string) string {
		m := regexp.MustCompile(`"` + name + `":"([^"]+)"`).FindStringSubmatch(body)
		if m == nil {
			t.Fatalf("no %s in %s", name, body)
		}
		return m[1]
	}
	sign := func(d *daemonProc, sub string) string {
		status, body := call(d, "/v1/keysets/es/sign", serviceToken, `{"claims":{"sub":"`+sub+`"}}`)
		if status != 200 {
			t.Fatalf("sign: %d %s", status, body)
		}
		return field(body, "token")
	}
	verify := func(d *daemonProc, tok string) string {
		status, body := call(d, "/v1/keysets/es/verify", serviceToken, `{"token":"`+tok+`"}`)
		if status != 200 {
			t.Fatalf("verify: %d %s", status, body)
		}
		if m := regexp.MustCompile(`"code":"([a-z_]+)"`).FindStringSubmatch(body); m != nil {
			return m[1]
		}
		return "valid"
	}
	refresh := func(d *daemonProc, rt string) string {
		status, body := call(d, "/v1/keysets/es/refresh", serviceToken, `{"refresh_token":"`+rt+`"}`)
		if status != 200 {
			t.Fatalf("refresh: %d %s", status, body)
		}
		return field(body, "refresh_token")
	}

	config(false)
	d := startDaemon(t, env, "--config", cfgPath)
	stolen, alice := sign(d, "bob"), sign(d, "alice")
	jti := jtiOf(t, stolen)
	for _, body := range []string{fmt.Sprintf(`{"jti":%q,"exp":%d}`, jti, time.Now().Add(10*time.Minute).Unix()), `{"sub":"alice"}`} {
		if status, out := call(d, "/v1/keysets/es/revocations", adminToken, body); status != 200 {
			t.Fatalf("revoke: %d %s", status, out)
		}
	}
	status, body := call(d, "/v1/keysets/es/token-pair", serviceToken, `{"claims":{"sub":"carol"}}`)
	if status != 200 {
		t.Fatalf("token pair: %d %s", status, body)
	}
	rt := field(body, "refresh_token")
	d.stop()
	check := func(d *daemonProc, when string) {
		t.Helper()
		for _, tok := range []string{stolen, alice} {
			if got := verify(d, tok); got != "token_revoked" {
				t.Fatalf("%s: a revoked token verifies: %s", when, got)
			}
		}
		rt = refresh(d, rt)
	}

	config(true)
	d = startDaemon(t, env, "--config", cfgPath)
	check(d, "after the switch to Redis")
	if !strings.Contains(d.log(), "moved the token state to Redis") {
		t.Errorf("the move was not logged:\n%s", d.log())
	}
	d.stop()

	config(false)
	code, out := runKeyd(t, env, "", "serve", "--config", cfgPath)
	if code == 0 || !strings.Contains(out, "keyd migrate-token-state") {
		t.Fatalf("back to the key store without bringing Redis's state: exit %d\n%s", code, out)
	}
	if code, out := runKeyd(t, env, "", "migrate-token-state", "--config", cfgPath, "--from-redis", srv.URL, "--prefix", "mv:"); code != 0 {
		t.Fatalf("migrate-token-state: exit %d\n%s", code, out)
	}
	d = startDaemon(t, env, "--config", cfgPath)
	check(d, "after the switch back")
	d.stop()
}
