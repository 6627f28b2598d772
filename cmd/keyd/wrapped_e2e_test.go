package main

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	vaultapi "github.com/hashicorp/vault/api"

	"github.com/keyd-dev/keyd/backends/file"
	"github.com/keyd-dev/keyd/internal/testvault"
)

// TestMasterKeyWrappedByTransit: bbolt's master key wrapped by a Transit
// key of a real OpenBao. keyd master-key new makes the Transit key and a
// file holding only the wrapped key; keyd unwraps it at start and serves;
// the key in clear is nowhere on disk. A key in clear is moved to wrapped
// by keyd master-key wrap without touching the bbolt file; after the
// Transit key is rotated, wrap again in place gives vault:v2 and keyd
// still starts. A changed wrapped file, or a Vault that refuses, stops
// the start with a message naming the master key; master-key rotate takes
// a wrapped new key.
func TestMasterKeyWrappedByTransit(t *testing.T) {
	srv := testvault.Start(t)
	vc := srv.RootClient(t)
	if err := vc.Sys().Mount("transit", &vaultapi.MountInput{Type: "transit"}); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	wrapped := filepath.Join(dir, "master.key.wrapped")
	block := fmt.Sprintf(`  file:
    path: %q
    master_key_file: %q
    master_key: {wrapped_by: vault_transit, key: keyd-master, vault: {address: %q, auth: {method: token}}}`, filepath.Join(dir, "keyd.db"), wrapped, srv.Addr)
	cfg := writeWrappedConfig(t, dir, "keyd.yaml", block)
	env := []string{"VAULT_TOKEN=" + testvault.RootToken, "KEYD_MASTER_KEY="}
	code, out := runKeyd(t, env, "", "master-key", "new", "--config", cfg, "--out", wrapped)
	if code != 0 || !strings.Contains(out, "made the wrapping key keyd-master") || !strings.Contains(out, "wrapped by vault_transit") {
		t.Fatalf("master-key new --config: exit %d\n%s", code, out)
	}
	key := unwrapWithBao(t, vc, wrapped)
	if data, _ := os.ReadFile(wrapped); strings.Contains(string(data), base64.StdEncoding.EncodeToString(key)) || strings.Contains(string(data), fmt.Sprintf("%x", key)) {
		t.Fatal("the wrapped file holds the key in clear")
	}

	if code, out := runKeyd(t, env, "", "config", "check", cfg); code != 0 || !strings.Contains(out, "ok: ") {
		t.Fatalf("config check of a wrapped master key: exit %d\n%s", code, out)
	}
	d := startDaemon(t, env, "--config", cfg)
	w := &tokenWorld{t: t, rec: &recorder{}}
	tok := w.sign(d, "alice")
	d.stop()
	// The bbolt file is sealed under the key Transit unwraps.
	s, err := file.Open(file.Options{Path: filepath.Join(dir, "keyd.db"), MasterKey: key})
	if err != nil {
		t.Fatalf("the key in the wrapped file does not open the database: %v", err)
	}
	s.Close()

	// Rotate the Transit key, wrap again in place: v2, same master key.
	if _, err := vc.Logical().Write("transit/keys/keyd-master/rotate", nil); err != nil {
		t.Fatal(err)
	}
	if code, out := runKeyd(t, env, "", "master-key", "wrap", "--config", cfg, "--out", wrapped); code != 0 || !strings.Contains(out, "id "+file.KeyID(key)) {
		t.Fatalf("master-key wrap in place: exit %d\n%s", code, out)
	}
	if wk := readWrapped(t, wrapped); !strings.HasPrefix(string(wk.Wrapped), "vault:v2:") {
		t.Fatalf("wrapped again after a Transit rotation: %.12s, want vault:v2:", wk.Wrapped)
	}
	d = startDaemon(t, env, "--config", cfg)
	w.verifies(d, tok, "after wrapping again")
	d.stop()

	// A wrapped file changed, and a Vault token without access: no start.
	data, _ := os.ReadFile(wrapped)
	wk := readWrapped(t, wrapped)
	wk.Wrapped = []byte(strings.Replace(string(wk.Wrapped), "vault:v2:", "vault:v2:AAAA", 1))
	tampered, _ := json.Marshal(wk)
	writeFile(t, wrapped, tampered)
	if code, out := runKeyd(t, env, "", "serve", "--config", cfg); code == 0 || !strings.Contains(out, "storage.file.master_key_file") || !strings.Contains(out, "unwrapping master key "+file.KeyID(key)) {
		t.Fatalf("a tampered wrapped key: exit %d\n%s", code, out)
	}
	writeFile(t, wrapped, data)
	bad := []string{"VAULT_TOKEN=not-a-token", "KEYD_MASTER_KEY="}
	if code, out := runKeyd(t, bad, "", "serve", "--config", cfg); code == 0 || !strings.Contains(out, "storage.file.master_key") || strings.Contains(out, base64.StdEncoding.EncodeToString(key)) {
		t.Fatalf("a Vault token refused: exit %d\n%s", code, out)
	}
	// A key in clear where the config wraps is refused, with the way out.
	plain := filepath.Join(dir, "plain.key")
	writeFile(t, plain, []byte(base64.StdEncoding.EncodeToString(key)+"\n"))
	cfgPlain := writeWrappedConfig(t, dir, "plain.yaml", strings.Replace(block, wrapped, plain, 1))
	for _, args := range [][]string{{"serve", "--config", cfgPlain}, {"config", "check", cfgPlain}} {
		if code, out := runKeyd(t, env, "", args...); code == 0 || !strings.Contains(out, "keyd master-key wrap") {
			t.Fatalf("a key in clear with wrapped_by, %s: exit %d\n%s", args[0], code, out)
		}
	}
	// ... and wrapped from clear: the same master key, the database untouched.
	moved := filepath.Join(dir, "moved.key.wrapped")
	if code, out := runKeyd(t, env, "", "master-key", "wrap", "--config", cfgPlain, "--out", moved); code != 0 || !strings.Contains(out, "id "+file.KeyID(key)) || !strings.Contains(out, "point storage.file.master_key_file at") {
		t.Fatalf("master-key wrap of a key in clear: exit %d\n%s", code, out)
	}
	if got := unwrapWithBao(t, vc, moved); string(got) != string(key) {
		t.Fatal("the key wrapped from clear is another key")
	}

	// Rotation to a new wrapped key.
	newWrapped := filepath.Join(dir, "new.key.wrapped")
	if code, out := runKeyd(t, env, "", "master-key", "new", "--config", cfg, "--out", newWrapped); code != 0 || strings.Contains(out, "made the wrapping key") {
		t.Fatalf("a second master-key new: exit %d\n%s", code, out)
	}
	if code, out := runKeyd(t, env, "", "master-key", "rotate", "--config", cfg, "--new-key-file", newWrapped); code != 0 || !strings.Contains(out, "1 key set(s)") {
		t.Fatalf("master-key rotate to a wrapped key: exit %d\n%s", code, out)
	}
	cfgNew := writeWrappedConfig(t, dir, "new.yaml", strings.Replace(block, wrapped, newWrapped, 1))
	if code, out := runKeyd(t, env, "", "serve", "--config", cfg); code == 0 || !strings.Contains(out, "does not open this database") {
		t.Fatalf("the old wrapped key after the rotation: exit %d\n%s", code, out)
	}
	d = startDaemon(t, env, "--config", cfgNew)
	w.verifies(d, tok, "after the master key rotation")
	d.stop()
}

// writeWrappedConfig writes name in dir, keyd's config with storage.file
// given by block.
func writeWrappedConfig(t *testing.T, dir, name, block string) string {
	t.Helper()
	base := t.TempDir()
	data, _ := os.ReadFile(writeKeydConfig(t, base, "", ""))
	path := filepath.Join(dir, name)
	out := strings.Replace(string(data), fmt.Sprintf("  file: {path: %q}\n\n", filepath.Join(base, "keyd.db")), block+"\n", 1)
	if out == string(data) {
		t.Fatal("the storage block was not replaced")
	}
	writeFile(t, path, []byte(out))
	return path
}

// readWrapped parses the wrapped master key file at path.
func readWrapped(t *testing.T, path string) file.Wrapped {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var wk file.Wrapped
	if err := json.Unmarshal(data, &wk); err != nil {
		t.Fatal(err)
	}
	return wk
}

// unwrapWithBao asks OpenBao itself (not keyd) for the master key in the
// wrapped file at path.
func unwrapWithBao(t *testing.T, vc *vaultapi.Client, path string) []byte {
	t.Helper()
	wk := readWrapped(t, path)
	s, err := vc.Logical().Write("transit/decrypt/"+wk.Key, map[string]any{"ciphertext": string(wk.Wrapped)})
	if err != nil {
		t.Fatal(err)
	}
	key, err := base64.StdEncoding.DecodeString(s.Data["plaintext"].(string))
	if err != nil || len(key) != 32 || file.KeyID(key) != wk.KeyID {
		t.Fatalf("OpenBao unwraps %d bytes (%v), id %s; the file says %s", len(key), err, file.KeyID(key), wk.KeyID)
	}
	return key
}
