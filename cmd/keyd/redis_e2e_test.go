package main

import (
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/keyd-dev/keyd/backends/file"
	"github.com/keyd-dev/keyd/internal/daemon"
	"github.com/keyd-dev/keyd/internal/testredis"
)

// TestRedisTokenState runs two keyd daemons on one real redis-server for
// token state: a revocation made through one is enforced by the other's
// verify endpoint within a second; with Redis stopped, revoking answers
// 503 and every known revocation is still enforced; Redis back, revoking
// works again without a restart.
func TestRedisTokenState(t *testing.T) {
	srv := testredis.Start(t)
	dir := t.TempDir()
	masterKey, _ := file.NewMasterKey()
	env := []string{"KEYD_MASTER_KEY=" + masterKey}
	// Each replica has its own bbolt file (its own keys): a token is
	// verified at the replica that signed it and revoked through the other
	// (a revocation names a jti or a subject, not a key).
	start := func(name string) *daemonProc {
		cfg := fmt.Sprintf(`listen: 127.0.0.1:0
storage:
  backend: file
  file: {path: %q}
  token_state: {backend: redis, url: %q, prefix: "e2e:"}
keysets:
  - {name: es, algorithm: ES256, rotation: "@daily", token_ttl: 10m, jwks_max_age: 1m}
auth:
  tokens:
    - {name: ops, sha256: %q, scopes: [admin]}
    - {name: svc, sha256: %q, scopes: ["sign:*", "verify:*"]}
`, filepath.Join(dir, name+".db"), srv.URL, daemon.TokenHash(adminToken), daemon.TokenHash(serviceToken))
		path := filepath.Join(dir, name+".yaml")
		writeFile(t, path, []byte(cfg))
		return startDaemon(t, env, "--config", path)
	}
	a, b := start("a"), start("b")
	rec := &recorder{}
	sign := func(d *daemonProc, sub string) string {
		status, body, _ := rec.call(t, "POST", d.addr+"/v1/keysets/es/sign", serviceToken, `{"claims":{"sub":"`+sub+`"}}`)
		m := regexp.MustCompile(`"token":"([^"]+)"`).FindSubmatch(body)
		if status != 200 || m == nil {
			t.Fatalf("sign: %d %s", status, body)
		}
		return string(m[1])
	}
	code := func(d *daemonProc, tok string) string {
		status, body, _ := rec.call(t, "POST", d.addr+"/v1/keysets/es/verify", serviceToken, `{"token":"`+tok+`"}`)
		if status != 200 {
			t.Fatalf("verify: %d %s", status, body)
		}
		if m := regexp.MustCompile(`"code":"([a-z_]+)"`).FindSubmatch(body); m != nil {
			return string(m[1])
		}
		return "valid"
	}
	atB := sign(b, "alice")
	jti := jtiOf(t, atB)
	if c := code(b, atB); c != "valid" {
		t.Fatalf("before: %s", c)
	}
	// Revoke at A by jti and exp; B enforces it within a second.
	revokedAt := time.Now()
	body := fmt.Sprintf(`{"jti":%q,"exp":%d}`, jti, time.Now().Add(10*time.Minute).Unix())
	if status, out, _ := rec.call(t, "POST", a.addr+"/v1/keysets/es/revocations", adminToken, body); status != 200 {
		t.Fatalf("revoke at A: %d %s", status, out)
	}
	for code(b, atB) != "token_revoked" {
		if time.Since(revokedAt) > time.Second {
			t.Fatalf("B did not enforce A's revocation within 1 s")
		}
		time.Sleep(10 * time.Millisecond) // polling the other replica
	}

	// Redis stops: revoking is 503, what is known is still enforced.
	srv.Stop()
	atB2 := sign(b, "bob")
	if status, out, _ := rec.call(t, "POST", b.addr+"/v1/keysets/es/revocations", adminToken, `{"sub":"bob"}`); status != 503 || !strings.Contains(string(out), "store_unavailable") {
		t.Fatalf("revoke with Redis down: %d %s", status, out)
	}
	if c := code(b, atB); c != "token_revoked" {
		t.Fatalf("a known revocation with Redis down: %s", c)
	}
	if c := code(b, atB2); c != "valid" {
		t.Fatalf("an unrevoked token with Redis down: %s", c)
	}
	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		status, out, _ := rec.call(t, "POST", b.addr+"/v1/keysets/es/revocations", adminToken, `{"sub":"bob"}`)
		if status == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("revoke after Redis returned: %d %s", status, out)
		}
		time.Sleep(100 * time.Millisecond) // waiting for the reconnect
	}
	if c := code(b, atB2); c != "token_revoked" {
		t.Fatalf("bob after Redis returned: %s", c)
	}
	a.stop()
	b.stop()
}
