package main

import (
	"fmt"
	"io"
	"net"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keyd-dev/keyd/backends/file"
	"github.com/keyd-dev/keyd/internal/config"
	"github.com/keyd-dev/keyd/internal/testredis"
)

// TestRedisTokenState runs three keyd daemons on one real redis-server for
// token state: a revocation made through one is enforced by the other two's
// verify endpoints within a second; a replica cut from Redis (through a
// proxy the test severs) misses a revocation, and enforces it once
// reconnected (its resync); with Redis stopped, revoking answers 503 and
// every known revocation is still enforced; Redis back, revoking works
// again without a restart.
func TestRedisTokenState(t *testing.T) {
	srv := testredis.Start(t)
	dir := t.TempDir()
	masterKey, _ := file.NewMasterKey()
	env := []string{"KEYD_MASTER_KEY=" + masterKey}
	// Each replica has its own bbolt file (its own keys): a token is
	// verified at the replica that signed it and revoked through the other
	// (a revocation names a jti or a subject, not a key).
	start := func(name, url string) *daemonProc {
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
`, filepath.Join(dir, name+".db"), url, config.TokenHash(adminToken), config.TokenHash(serviceToken))
		path := filepath.Join(dir, name+".yaml")
		writeFile(t, path, []byte(cfg))
		return startDaemon(t, env, "--config", path)
	}
	link := newCuttableProxy(t, srv.Addr) // C reaches Redis through it
	a, b, c := start("a", srv.URL), start("b", srv.URL), start("c", "redis://"+link.addr+"/0")
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
	atC := sign(c, "carol")
	body = fmt.Sprintf(`{"jti":%q,"exp":%d}`, jtiOf(t, atC), time.Now().Add(10*time.Minute).Unix())
	if status, out, _ := rec.call(t, "POST", a.addr+"/v1/keysets/es/revocations", adminToken, body); status != 200 {
		t.Fatalf("revoke at A: %d %s", status, out)
	}
	for code(b, atB) != "token_revoked" || code(c, atC) != "token_revoked" {
		if time.Since(revokedAt) > time.Second {
			t.Fatalf("B and C did not enforce A's revocations within 1 s")
		}
		time.Sleep(10 * time.Millisecond) // polling the other replicas
	}

	// C is cut from Redis: a revocation made meanwhile does not reach it;
	// reconnected, it resyncs and enforces it.
	missed := sign(c, "dave")
	link.cut()
	body = fmt.Sprintf(`{"jti":%q,"exp":%d}`, jtiOf(t, missed), time.Now().Add(10*time.Minute).Unix())
	if status, out, _ := rec.call(t, "POST", a.addr+"/v1/keysets/es/revocations", adminToken, body); status != 200 {
		t.Fatalf("revoke at A while C is cut: %d %s", status, out)
	}
	if got := code(c, missed); got != "valid" {
		t.Fatalf("C heard a revocation while cut from Redis: %s", got)
	}
	link.restore()
	reconnected := time.Now()
	for code(c, missed) != "token_revoked" {
		if time.Since(reconnected) > 15*time.Second {
			t.Fatalf("C did not catch up within 15 s of reconnecting")
		}
		time.Sleep(50 * time.Millisecond) // waiting for C's reconnect and resync
	}
	c.stop()

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

// cuttableProxy forwards TCP to a server until cut: then it closes every
// connection and refuses new ones, until restored.
type cuttableProxy struct {
	addr  string
	mu    sync.Mutex
	down  bool
	conns []net.Conn
}

func newCuttableProxy(t *testing.T, target string) *cuttableProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cuttableProxy{addr: ln.Addr().String()}
	t.Cleanup(func() { ln.Close(); p.cut() })
	go func() {
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			p.mu.Lock()
			if p.down {
				p.mu.Unlock()
				in.Close()
				continue
			}
			out, err := net.Dial("tcp", target)
			if err != nil {
				p.mu.Unlock()
				in.Close()
				continue
			}
			p.conns = append(p.conns, in, out)
			p.mu.Unlock()
			go func() { _, _ = io.Copy(out, in); out.Close() }()
			go func() { _, _ = io.Copy(in, out); in.Close() }()
		}
	}()
	return p
}

func (p *cuttableProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = true
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

func (p *cuttableProxy) restore() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = false
}
