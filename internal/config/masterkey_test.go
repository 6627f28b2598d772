package config_test

import (
	"strings"
	"testing"

	"github.com/keyd-dev/keyd/internal/config"
)

// The wrapped master key's settings: each mistake named by its field, a
// Vault connection of its own with defaults, and nothing of a wrapper
// where none is set.
func TestMasterKeyRules(t *testing.T) {
	const head = "keysets: [{name: a, algorithm: ES256}]\nstorage:\n  backend: file\n  file:\n    path: /tmp/x.db\n"
	for _, tc := range []struct{ file, want string }{
		{"    master_key: {key: k}\n", "storage.file.master_key.wrapped_by: is required"},
		{"    master_key: {wrapped_by: kms}\n", `storage.file.master_key.wrapped_by: "kms" is not supported`},
		{"    master_key: {wrapped_by: vault_transit}\n", "storage.file.master_key_file: is required with master_key.wrapped_by"},
		{"    master_key_file: /k\n    master_key: {wrapped_by: vault_transit, vault: {auth: {method: approle}}}\n", "storage.file.master_key.vault.auth.approle.role_id: is required"},
		{"    master_key_file: /k\n    master_key: {wrapped_by: vault_transit, module: /lib.so}\n", "module, token_label and pin_file are for pkcs11"},
		{"    master_key_file: /k\n    master_key: {wrapped_by: vault_transit, vault: {adress: x}}\n", "storage.file.master_key.vault.adress: unknown field (did you mean address?)"},
		{"    master_key_file: /k\n    master_key: {wrapped_by: pkcs11, mount: transit}\n", "mount and vault are for vault_transit"},
	} {
		_, err := config.Parse(strings.NewReader(head+tc.file), "t")
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v; want %q", tc.file, err, tc.want)
		}
	}
	cfg, err := config.Parse(strings.NewReader(head+"    master_key_file: /k\n    master_key: {wrapped_by: vault_transit, vault: {address: \"https://vault:8200\"}}\n"), "t")
	if err != nil {
		t.Fatal(err)
	}
	m := cfg.Storage.File.MasterKey
	if m.Key != config.DefaultWrappingKey || m.Mount != "transit" || m.Vault.Auth.Method != "token" || m.Vault.Timeout != config.DefaultVaultTimeout || m.Vault.Address != "https://vault:8200" {
		t.Fatalf("defaults: %+v", m)
	}
	if cfg, err := config.Parse(strings.NewReader(head), "t"); err != nil || cfg.Storage.File.MasterKey != (config.MasterKey{}) {
		t.Fatalf("no wrapper: %+v, %v", cfg.Storage.File.MasterKey, err)
	}
}
