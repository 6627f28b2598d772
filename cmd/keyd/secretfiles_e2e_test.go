package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/keyd-dev/keyd/backends/file"
)

// Every file that holds a secret follows the one owner-only rule: a Redis
// password file, a Vault AppRole secret-id file or a TLS private key that
// its group or others can read stops keyd at start, naming the file and
// the fix (they were read with os.ReadFile, whatever their mode); and
// VAULT_SKIP_VERIFY in the environment does not silently turn off Vault's
// TLS verification.
func TestSecretFilesAreOwnerOnly(t *testing.T) {
	dir := t.TempDir()
	open := func(name string) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte("s3cret-value\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		return path
	}
	certPEM, keyPEM, _ := newCA(t, "test CA").issue(t, 1, true, "")
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	writeFile(t, certFile, certPEM)
	if err := os.WriteFile(keyFile, keyPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	db := filepath.Join(dir, "keyd.db")
	keysets := `keysets: [{name: app, algorithm: ES256, rotation: "@daily", token_ttl: 10m, jwks_max_age: 1m}]`
	masterKey, _ := file.NewMasterKey()
	env := []string{"KEYD_MASTER_KEY=" + masterKey}
	for name, c := range map[string]struct{ config, file string }{
		"redis password": {fmt.Sprintf("storage: {backend: file, file: {path: %q}, token_state: {backend: redis, url: \"redis://127.0.0.1:1/0\", password_file: %q}}\n", db, open("redis.pw")), "redis.pw"},
		"approle secret": {fmt.Sprintf("storage: {backend: vault, vault: {address: \"https://127.0.0.1:1\", auth: {method: approle, approle: {role_id: r, secret_id_file: %q}}}}\n", open("secret-id")), "secret-id"},
		"tls key":        {fmt.Sprintf("storage: {backend: file, file: {path: %q}}\ntls: {cert_file: %q, key_file: %q}\n", db, certFile, keyFile), keyFile},
	} {
		path := filepath.Join(dir, strings.ReplaceAll(name, " ", "-")+".yaml")
		writeFile(t, path, []byte("listen: 127.0.0.1:0\n"+c.config+keysets+"\n"))
		code, out := runKeyd(t, env, "", "serve", "--config", path)
		if code == 0 || !strings.Contains(out, filepath.Base(c.file)) || !strings.Contains(out, "chmod 600") {
			t.Errorf("%s readable by others: exit %d\n%s", name, code, out)
		}
		if strings.Contains(out, "s3cret-value") {
			t.Errorf("%s: the error shows the secret:\n%s", name, out)
		}
		// keyd config check says so too, without starting.
		if code, out := runKeyd(t, env, "", "config", "check", path); code == 0 || !strings.Contains(out, filepath.Base(c.file)) {
			t.Errorf("config check, %s readable by others: exit %d\n%s", name, code, out)
		}
	}
	// A Vault CA file that is not there: config check says it (a start
	// would fail on it), and its ok line names the token state.
	missingCA := filepath.Join(dir, "vault-ca.yaml")
	writeFile(t, missingCA, []byte("listen: 127.0.0.1:0\nstorage: {backend: vault, vault: {address: \"https://127.0.0.1:1\", tls: {ca_file: /nonexistent/ca.pem}}}\n"+keysets+"\n"))
	if code, out := runKeyd(t, []string{"VAULT_TOKEN=x"}, "", "config", "check", missingCA); code == 0 || !strings.Contains(out, "storage.vault.tls.ca_file") {
		t.Errorf("config check with the Vault CA file missing: exit %d\n%s", code, out)
	}
	pw := filepath.Join(dir, "redis-ok.pw")
	writeFile(t, pw, []byte("s3cret-value\n"))
	okRedis := filepath.Join(dir, "redis-ok.yaml")
	writeFile(t, okRedis, []byte(fmt.Sprintf("listen: 127.0.0.1:0\nstorage: {backend: file, file: {path: %q}, token_state: {backend: redis, url: \"redis://127.0.0.1:1/0\", password_file: %q}}\n", db, pw)+keysets+"\n"))
	if code, out := runKeyd(t, env, "", "config", "check", okRedis); code != 0 || !strings.Contains(out, "token state redis") {
		t.Errorf("config check of a Redis token state: exit %d\n%s", code, out)
	}

	cfg := filepath.Join(dir, "vault.yaml")
	writeFile(t, cfg, []byte("listen: 127.0.0.1:0\nstorage: {backend: vault, vault: {address: \"https://127.0.0.1:1\"}}\n"+keysets+"\n"))
	code, out := runKeyd(t, []string{"VAULT_SKIP_VERIFY=true", "VAULT_TOKEN=x"}, "", "serve", "--config", cfg)
	if code == 0 || !strings.Contains(out, "VAULT_SKIP_VERIFY") {
		t.Errorf("VAULT_SKIP_VERIFY=true: exit %d\n%s", code, out)
	}
}
