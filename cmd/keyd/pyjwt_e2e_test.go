package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/keyd-dev/keyd/backends/file"
	"github.com/keyd-dev/keyd/internal/config"
)

// pyjwt returns Debian's python3 with PyJWT, or skips (fails where
// KEYD_REQUIRE_PYJWT is set, as in scripts/test.sh).
func pyjwt(t *testing.T) string {
	t.Helper()
	const python = "/usr/bin/python3"
	if err := exec.Command(python, "-c", "import jwt, cryptography").Run(); err != nil {
		if os.Getenv("KEYD_REQUIRE_PYJWT") != "" {
			t.Fatalf("PyJWT is required (apt-get install python3-jwt python3-cryptography): %v", err)
		}
		t.Skip("no PyJWT for /usr/bin/python3 (apt-get install python3-jwt python3-cryptography)")
	}
	return python
}

// TestPyJWTHonoursRevocations runs the README's PyJWT revocation helper
// (examples/python/keyd_revocations.py) against a real keyd: revoked
// tokens are rejected, the rest accepted, and the revocations hold across
// a restart.
func TestPyJWTHonoursRevocations(t *testing.T) {
	python := pyjwt(t)
	dir := t.TempDir()
	cfg := fmt.Sprintf(`listen: 127.0.0.1:0
storage: {backend: file, file: {path: %q}}
keysets:
  - {name: es, algorithm: ES256, rotation: "@daily", token_ttl: 10m, jwks_max_age: 1m}
auth:
  tokens:
    - {name: ops, sha256: %q, scopes: [admin]}
    - {name: svc, sha256: %q, scopes: ["sign:*", "verify:*"]}
`, filepath.Join(dir, "keyd.db"), config.TokenHash(adminToken), config.TokenHash(serviceToken))
	cfgPath := filepath.Join(dir, "keyd.yaml")
	writeFile(t, cfgPath, []byte(cfg))
	masterKey, _ := file.NewMasterKey()
	env := []string{"KEYD_MASTER_KEY=" + masterKey}
	d := startDaemon(t, env, "--config", cfgPath)
	rec := &recorder{}
	sign := func(sub string) string {
		status, body, _ := rec.call(t, "POST", d.addr+"/v1/keysets/es/sign", serviceToken, `{"claims":{"sub":"`+sub+`"}}`)
		var out struct{ Token string }
		if status != 200 || json.Unmarshal(body, &out) != nil {
			t.Fatalf("sign: %d %s", status, body)
		}
		return out.Token
	}
	stolen, alice, bob := sign("mallory"), sign("alice"), sign("bob")
	for _, body := range []string{`{"token":"` + stolen + `","reason":"stolen"}`, `{"sub":"alice"}`} {
		if status, out, _ := rec.call(t, "POST", d.addr+"/v1/keysets/es/revocations", adminToken, body); status != 200 {
			t.Fatalf("revoke: %d %s", status, out)
		}
	}
	check := func(addr string) []string {
		t.Helper()
		cmd := exec.Command(python, "testdata/check_revoked.py", addr, "es", "ES256", "../../examples/python")
		cmd.Stdin = strings.NewReader(strings.Join([]string{stolen, alice, bob, "not.a.token"}, "\n"))
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("python: %v\n%s", err, out)
		}
		return strings.Fields(string(out))
	}
	want := "revoked revoked valid DecodeError"
	if got := strings.Join(check(d.addr), " "); got != want {
		t.Fatalf("PyJWT with the helper: %s, want %s", got, want)
	}
	d.stop()
	d = startDaemon(t, env, "--config", cfgPath)
	if got := strings.Join(check(d.addr), " "); got != want {
		t.Fatalf("after a restart: %s, want %s", got, want)
	}
	for _, tok := range []string{stolen, alice} {
		status, body, _ := rec.call(t, "POST", d.addr+"/v1/keysets/es/verify", serviceToken, `{"token":"`+tok+`"}`)
		if status != 200 || !strings.Contains(string(body), `"code":"token_revoked"`) {
			t.Fatalf("keyd's verify after a restart: %d %s", status, body)
		}
	}
	// A running service: bob is valid; keyd revokes him; the helper's next
	// refresh fetches only the delta, and bob is revoked.
	cmd := exec.Command(python, "testdata/check_revoked.py", d.addr, "es", "ES256", "../../examples/python")
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := bufio.NewScanner(stdout)
	ask := func(line string) string {
		t.Helper()
		fmt.Fprintln(stdin, line)
		if !lines.Scan() {
			t.Fatalf("the helper stopped: %v", cmd.Wait())
		}
		return lines.Text()
	}
	if got := ask(bob); got != "valid" {
		t.Fatalf("bob before: %s", got)
	}
	if status, out, _ := rec.call(t, "POST", d.addr+"/v1/keysets/es/revocations", adminToken, `{"token":"`+bob+`"}`); status != 200 {
		t.Fatalf("revoke bob: %d %s", status, out)
	}
	if got := ask("REFRESH"); got != "fetched=2 deltas=1" {
		t.Fatalf("the helper's refresh: %s", got)
	}
	if got := ask(bob); got != "revoked" {
		t.Fatalf("bob after the delta: %s", got)
	}
	if got := ask(stolen); got != "revoked" {
		t.Fatalf("the earlier revocation after the delta: %s", got)
	}
	stdin.Close()
	_ = cmd.Wait()
	d.stop()
}

// TestPEMEndpointWithPyJWT: a key's PEM from keyd verifies keyd's tokens
// in PyJWT with a static key (as nginx or Envoy would use it), for EC and
// RSA key sets; unknown kids and HMAC key sets have none.
func TestPEMEndpointWithPyJWT(t *testing.T) {
	python := pyjwt(t)
	dir := t.TempDir()
	cfg := fmt.Sprintf(`listen: 127.0.0.1:0
storage: {backend: file, file: {path: %q}}
keysets:
  - {name: es, algorithm: ES256, rotation: "@daily", token_ttl: 10m, jwks_max_age: 1m}
  - {name: ps, algorithm: PS256, rotation: "@daily", token_ttl: 10m, jwks_max_age: 1m}
  - {name: hs, algorithm: HS256, rotation: "@daily", token_ttl: 10m, jwks_max_age: 1m}
auth:
  tokens:
    - {name: svc, sha256: %q, scopes: ["sign:*", "verify:*"]}
`, filepath.Join(dir, "keyd.db"), config.TokenHash(serviceToken))
	cfgPath := filepath.Join(dir, "keyd.yaml")
	writeFile(t, cfgPath, []byte(cfg))
	masterKey, _ := file.NewMasterKey()
	d := startDaemon(t, []string{"KEYD_MASTER_KEY=" + masterKey}, "--config", cfgPath)
	rec := &recorder{}
	for keyset, alg := range map[string]string{"es": "ES256", "ps": "PS256"} {
		status, body, _ := rec.call(t, "POST", d.addr+"/v1/keysets/"+keyset+"/sign", serviceToken, `{"claims":{"sub":"pem-user"}}`)
		var out struct{ Token, KID string }
		if status != 200 || json.Unmarshal(body, &out) != nil {
			t.Fatalf("sign: %d %s", status, body)
		}
		status, pemBody, hdr := rec.call(t, "GET", d.addr+"/v1/keysets/"+keyset+"/keys/"+out.KID+".pem", "", "")
		if status != 200 || !strings.HasPrefix(string(pemBody), "-----BEGIN PUBLIC KEY-----") || hdr.Get("Cache-Control") != "public, max-age=60" {
			t.Fatalf("%s PEM: %d %v %s", keyset, status, hdr, pemBody)
		}
		cmd := exec.Command(python, "-c", `import sys, jwt
print(jwt.decode(sys.argv[1], sys.argv[2], algorithms=[sys.argv[3]])["sub"])`, out.Token, string(pemBody), alg)
		got, err := cmd.CombinedOutput()
		if err != nil || strings.TrimSpace(string(got)) != "pem-user" {
			t.Fatalf("PyJWT with %s's PEM: %v\n%s", keyset, err, got)
		}
	}
	for _, path := range []string{"/v1/keysets/es/keys/nope.pem", "/v1/keysets/hs/keys/x.pem", "/v1/keysets/es/keys/nope"} {
		if status, _, _ := rec.call(t, "GET", d.addr+path, "", ""); status != 404 {
			t.Errorf("%s: %d", path, status)
		}
	}
	d.stop()
}
