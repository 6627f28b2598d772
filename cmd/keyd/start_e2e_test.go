package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keyd-dev/keyd/backends/file"
	"github.com/keyd-dev/keyd/internal/config"
)

func TestStartupErrors(t *testing.T) {
	dir := t.TempDir()
	cfgPath := writeConfig(t, dir)
	// No master key.
	code, out := runKeyd(t, []string{"KEYD_MASTER_KEY="}, "", "serve", "--config", cfgPath)
	if code == 0 || !strings.Contains(out, "missing master key") || !strings.Contains(out, "KEYD_MASTER_KEY") {
		t.Fatalf("no master key: exit %d\n%s", code, out)
	}
	// Wrong master key on an existing db.
	k1, _ := file.NewMasterKey()
	k2, _ := file.NewMasterKey()
	d := startDaemon(t, []string{"KEYD_MASTER_KEY=" + k1}, "--config", cfgPath)
	d.stop()
	code, out = runKeyd(t, []string{"KEYD_MASTER_KEY=" + k2}, "", "serve", "--config", cfgPath)
	if code == 0 || !strings.Contains(out, "master key does not open this database") {
		t.Fatalf("wrong master key: exit %d\n%s", code, out)
	}
	// Bad config: the field and the reason.
	bad := filepath.Join(dir, "bad.yaml")
	_ = os.WriteFile(bad, []byte("keysets: [{name: x, algorithm: none}]\nlisten: 127.0.0.1:0\n"), 0o600)
	code, out = runKeyd(t, nil, "", "serve", "--config", bad)
	if code == 0 || !strings.Contains(out, "keysets[0].algorithm") || !strings.Contains(out, `"none"`) {
		t.Fatalf("bad config: exit %d\n%s", code, out)
	}
}

func TestEmbeddedDefault(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	d := startDaemon(t, []string{"KEYD_MASTER_KEY="}, "--data", dir, "--listen", "127.0.0.1:0")
	for _, name := range []string{"master.key", "admin.token", "keyd.db"} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %v mode %v", name, err, fi.Mode())
		}
	}
	tok, _ := os.ReadFile(filepath.Join(dir, "admin.token"))
	mk, _ := os.ReadFile(filepath.Join(dir, "master.key"))
	if strings.Contains(d.log(), strings.TrimSpace(string(tok))) || strings.Contains(d.log(), strings.TrimSpace(string(mk))) {
		t.Fatal("a generated secret was logged")
	}
	if !strings.Contains(d.log(), "admin.token") {
		t.Fatalf("log does not say where the admin token is:\n%s", d.log())
	}
	rec := &recorder{}
	status, body, _ := rec.call(t, "GET", d.addr+"/v1/keysets/default", strings.TrimSpace(string(tok)), "")
	if status != 200 || !strings.Contains(string(body), `"algorithm":"ES256"`) || !strings.Contains(string(body), `"rotation":"@daily"`) ||
		!strings.Contains(string(body), `"token_ttl":"15m0s"`) || !strings.Contains(string(body), `"jwks_max_age":"5m0s"`) {
		t.Fatalf("default key set: %d %s", status, body)
	}
	_, _, hdr := rec.call(t, "GET", d.addr+"/.well-known/jwks.json", "", "")
	if hdr.Get("Cache-Control") != "public, max-age=300" {
		t.Fatalf("default JWKS max age: %v", hdr)
	}
	d.stop()
	// A second start reuses the files.
	d = startDaemon(t, []string{"KEYD_MASTER_KEY="}, "--data", dir, "--listen", "127.0.0.1:0")
	if status, _, _ := rec.call(t, "POST", d.addr+"/v1/keysets/default/sign", strings.TrimSpace(string(tok)), `{"claims": {}}`); status != 200 {
		t.Fatalf("sign after restart with the same admin token: %d", status)
	}
	d.stop()
}

// From the quick start to a config file in one step: keyd init writes a
// config serving the quick start's data; keyd config check passes it; keyd
// serve --config starts on it with the same keys and admin token. A bad
// file gets every problem at once.
func TestInitThenServeConfig(t *testing.T) {
	base := t.TempDir()
	dir := filepath.Join(base, "data")
	env := []string{"KEYD_MASTER_KEY="}
	d := startDaemon(t, env, "--data", dir, "--listen", "127.0.0.1:0")
	tok, _ := os.ReadFile(filepath.Join(dir, "admin.token"))
	admin := strings.TrimSpace(string(tok))
	rec := &recorder{}
	_, before, _ := rec.call(t, "GET", d.addr+"/v1/keysets/default", admin, "")
	d.stop()
	cfg := filepath.Join(base, "keyd.yaml")
	if code, out := runKeyd(t, env, "", "init", "--data", dir, "--out", cfg); code != 0 || !strings.Contains(out, "wrote "+cfg) {
		t.Fatalf("keyd init: %d %s", code, out)
	}
	if data, _ := os.ReadFile(cfg); strings.Contains(string(data), admin) {
		t.Fatal("keyd init wrote the admin token itself")
	}
	if code, out := runKeyd(t, env, "", "init", "--data", dir, "--out", cfg); code != 1 || !strings.Contains(out, "exists") {
		t.Fatalf("keyd init over an existing file: %d %s", code, out)
	}
	// --listen: the address the quick start served on goes into the file.
	other := filepath.Join(base, "other.yaml")
	if code, out := runKeyd(t, env, "", "init", "--data", dir, "--out", other, "--listen", "127.0.0.1:9443"); code != 0 {
		t.Fatalf("keyd init --listen: %d %s", code, out)
	}
	if data, _ := os.ReadFile(other); !strings.Contains(string(data), `listen: "127.0.0.1:9443"`) {
		t.Fatalf("keyd init --listen wrote:\n%s", data)
	}
	if code, out := runKeyd(t, env, "", "init", "--data", dir, "--out", other+".2", "--listen", "9443"); code == 0 || !strings.Contains(out, "HOST:PORT") {
		t.Fatalf("keyd init --listen 9443: %d %s", code, out)
	}
	if code, out := runKeyd(t, env, "", "config", "check", cfg); code != 0 || !strings.Contains(out, "ok: ") {
		t.Fatalf("keyd config check: %d %s", code, out)
	}
	d = startDaemon(t, env, "--config", cfg, "--listen", "127.0.0.1:0")
	status, after, _ := rec.call(t, "GET", d.addr+"/v1/keysets/default", admin, "")
	if status != 200 || activeKID(before) == "" || activeKID(before) != activeKID(after) {
		t.Fatalf("the config's daemon: %d, active kid %q, was %q", status, activeKID(after), activeKID(before))
	}
	d.stop()

	bad := filepath.Join(base, "bad.yaml")
	writeFile(t, bad, []byte("keysets: [{name: a, algoritm: ES256, token_ttl: 15}]\nstorage: {file: {master_key_file: /nonexistent/key}}\n"))
	code, out := runKeyd(t, nil, "", "config", "check", bad)
	for _, w := range []string{"algoritm: unknown field (did you mean algorithm?)", "token_ttl: 15 has no unit"} {
		if code != 1 || !strings.Contains(out, w) {
			t.Errorf("config check of a bad file (exit %d) does not say %q:\n%s", code, w, out)
		}
	}
}

// TestConfigCheckLegacyKid: keyd config check reads the key sets when it
// can open the store (keyd stopped): a legacy.kid that names no key of
// the key set (flsk for flask), or a legacy.until past the key's
// verify_until, fails the check, naming both; the right kid passes.
func TestConfigCheckLegacyKid(t *testing.T) {
	dir := t.TempDir()
	mk, _ := file.NewMasterKey()
	env := []string{"KEYD_MASTER_KEY=" + mk}
	write := func(legacy string) string {
		path := filepath.Join(dir, "keyd.yaml")
		writeFile(t, path, fmt.Appendf(nil, `listen: 127.0.0.1:0
storage: {backend: file, file: {path: %q}}
keysets:
  - {name: legacy, algorithm: HS256%s}
auth:
  tokens: [{name: ops, sha256: %q, scopes: [admin]}]
`, filepath.Join(dir, "keyd.db"), legacy, config.TokenHash(adminToken)))
		return path
	}
	cfg := write("")
	d := startDaemon(t, env, "--config", cfg)
	cli := append([]string{"KEYD_ADDR=" + d.addr, "KEYD_TOKEN=" + adminToken}, env...)
	if code, out := runKeyd(t, cli, "a-flask-secret-key-of-32-bytes!!", "import-key", "legacy", "--secret", "--kid", "flask", "--verify-until", "720h"); code != 0 {
		t.Fatalf("import-key: %d %s", code, out)
	}
	d.stop()
	until := time.Now().Add(24 * time.Hour).UTC().Format(time.RFC3339)
	for legacy, want := range map[string]string{
		", legacy: {kid: flsk, until: " + until + "}":                                                      `legacy.kid "flsk" is not a key`,
		", legacy: {kid: flask, until: " + time.Now().Add(2000*time.Hour).UTC().Format(time.RFC3339) + "}": "is after key flask's verify_until",
	} {
		if code, out := runKeyd(t, env, "", "config", "check", write(legacy)); code != 1 || !strings.Contains(out, want) {
			t.Errorf("config check with %s: exit %d\n%s", legacy, code, out)
		}
	}
	if code, out := runKeyd(t, env, "", "config", "check", write(", legacy: {kid: flask, until: "+until+"}")); code != 0 {
		t.Errorf("config check with the right kid: exit %d\n%s", code, out)
	}
}
