package daemon

import (
	"errors"
	"fmt"
	"log/slog"

	"github.com/keyd-dev/keyd/backends/file"
	"github.com/keyd-dev/keyd/backends/vault"
	"github.com/keyd-dev/keyd/internal/config"
	"github.com/keyd-dev/keyd/internal/secretfile"
	"github.com/keyd-dev/keyd/keystore"
)

// openStore opens the key store of sc: bbolt under its master key, or
// Vault.
func openStore(sc config.Storage, getenv func(string) string, log *slog.Logger) (keystore.Store, error) {
	switch sc.Backend {
	case "file":
		key, err := loadMasterKey(sc.File, getenv)
		if err != nil {
			return nil, err
		}
		return file.Open(file.Options{Path: sc.File.Path, MasterKey: key})
	case "vault":
		v := sc.Vault
		o := vault.Options{
			Address: v.Address, Mount: v.Mount, Prefix: v.Prefix, Timeout: v.Timeout,
			CAFile: v.TLS.CAFile, SkipVerify: v.TLS.SkipVerify, Logger: log,
		}
		switch v.Auth.Method {
		case "approle":
			if err := secretfile.Check(v.Auth.AppRole.SecretIDFile); err != nil { // owner-only, as every secret file
				return nil, fmt.Errorf("storage.vault.auth.approle.secret_id_file: %w", err)
			}
			o.RoleID, o.SecretIDFile, o.AppRoleMount = v.Auth.AppRole.RoleID, v.Auth.AppRole.SecretIDFile, v.Auth.AppRole.Mount
		case "kubernetes":
			o.KubernetesRole, o.KubernetesTokenFile, o.KubernetesMount = v.Auth.Kubernetes.Role, v.Auth.Kubernetes.TokenFile, v.Auth.Kubernetes.Mount
		}
		if v.TLS.SkipVerify {
			log.Warn("storage.vault.tls.skip_verify is set: Vault's certificate is not checked")
		}
		return vault.Open(o)
	}
	return nil, fmt.Errorf("storage.backend: %q is not supported", sc.Backend)
}

// loadMasterKey reads the master key from storage.file.master_key_file or
// KEYD_MASTER_KEY; exactly one must be set. A key file must not be readable
// by group or others.
func loadMasterKey(fc config.File, getenv func(string) string) ([]byte, error) {
	env := getenv(EnvMasterKey)
	switch {
	case fc.MasterKeyFile != "" && env != "":
		return nil, fmt.Errorf("master key: both %s and storage.file.master_key_file are set; keep one", EnvMasterKey)
	case env != "":
		key, err := file.ParseMasterKey(env)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", EnvMasterKey, err)
		}
		return key, nil
	case fc.MasterKeyFile != "":
		raw, err := secretfile.Read(fc.MasterKeyFile)
		if err != nil {
			return nil, fmt.Errorf("storage.file.master_key_file: %w", err)
		}
		key, err := file.ParseMasterKey(string(raw))
		if err != nil {
			return nil, fmt.Errorf("storage.file.master_key_file %s: %w", fc.MasterKeyFile, err)
		}
		return key, nil
	}
	return nil, fmt.Errorf("missing master key: set %s (base64 of 32 random bytes, e.g. `head -c 32 /dev/urandom | base64`) or storage.file.master_key_file", EnvMasterKey)
}

// RotateMasterKey seals the bbolt file of cfg under the master key in
// newKeyFile instead of the one cfg gives (file.Rekey): keyd must be
// stopped. It returns what it sealed again and the two keys' ids.
func RotateMasterKey(cfg *config.Config, newKeyFile string, getenv func(string) string) (st file.RekeyStats, oldID, newID string, err error) {
	if cfg.Storage.Backend != "file" {
		return st, "", "", fmt.Errorf("storage.backend is %s: Vault encrypts what it stores itself, keyd holds no master key there (rotate Vault's own keys: vault operator rotate)", cfg.Storage.Backend)
	}
	oldKey, err := loadMasterKey(cfg.Storage.File, getenv)
	if err != nil {
		return st, "", "", err
	}
	raw, err := secretfile.Read(newKeyFile) // owner-only, as every secret file
	if err != nil {
		return st, "", "", fmt.Errorf("--new-key-file: %w", err)
	}
	newKey, err := file.ParseMasterKey(string(raw))
	if err != nil {
		return st, "", "", fmt.Errorf("--new-key-file %s: %w", newKeyFile, err)
	}
	st, err = file.Rekey(cfg.Storage.File.Path, oldKey, newKey)
	if errors.Is(err, file.ErrLocked) {
		err = fmt.Errorf("%w: stop keyd first; the rotation writes the file anew and swaps it in whole", err)
	}
	return st, file.KeyID(oldKey), file.KeyID(newKey), err
}

// MasterKeyID is the id of the master key cfg gives (file.KeyID).
func MasterKeyID(fc config.File, getenv func(string) string) (string, error) {
	key, err := loadMasterKey(fc, getenv)
	if err != nil {
		return "", err
	}
	return file.KeyID(key), nil
}
