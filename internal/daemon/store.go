package daemon

import (
	"context"
	"fmt"
	"log/slog"

	vaultapi "github.com/hashicorp/vault/api"

	"github.com/keyd-dev/keyd/backends/file"
	"github.com/keyd-dev/keyd/backends/vault"
	"github.com/keyd-dev/keyd/internal/config"
	"github.com/keyd-dev/keyd/internal/secretfile"
	"github.com/keyd-dev/keyd/keystore"
)

// engine is an opened key store and what the daemon needs of its backend,
// so that nothing asserts a backend's type: whether replicas share it
// (poll for their changes), the Vault connection Transit custody uses, and
// how to give back the pages a whole read of a bbolt file mapped.
type engine struct {
	keystore.Store
	Shared  bool             // Vault: several keyds write it
	Vault   *vaultapi.Client // nil but on Vault
	Release func() error     // nil where nothing is mapped
}

// openStore opens the key store of sc: bbolt under its master key, or
// Vault.
func openStore(ctx context.Context, sc config.Storage, getenv func(string) string, log *slog.Logger) (*engine, error) {
	switch sc.Backend {
	case "file":
		key, err := loadMasterKey(ctx, sc.File, getenv, log)
		if err != nil {
			return nil, err
		}
		s, err := file.Open(file.Options{Path: sc.File.Path, MasterKey: key})
		if err != nil {
			return nil, err
		}
		return &engine{Store: s, Release: s.ReleaseMapped}, nil
	case "vault":
		o, err := vaultOptions("storage.vault", sc.Vault.VaultConn, log)
		if err != nil {
			return nil, err
		}
		o.Mount, o.Prefix = sc.Vault.Mount, sc.Vault.Prefix
		s, err := vault.Open(o)
		if err != nil {
			return nil, err
		}
		return &engine{Store: s, Shared: true, Vault: s.Client()}, nil
	}
	return nil, fmt.Errorf("storage.backend: %q is not supported", sc.Backend)
}

// vaultOptions are the options of a connection to Vault configured at
// field.
func vaultOptions(field string, v config.VaultConn, log *slog.Logger) (vault.Options, error) {
	o := vault.Options{
		Address: v.Address, Timeout: v.Timeout,
		CAFile: v.TLS.CAFile, SkipVerify: v.TLS.SkipVerify, Logger: log,
	}
	switch v.Auth.Method {
	case "approle":
		if err := secretfile.Check(v.Auth.AppRole.SecretIDFile); err != nil { // owner-only, as every secret file
			return o, fmt.Errorf("%s.auth.approle.secret_id_file: %w", field, err)
		}
		o.RoleID, o.SecretIDFile, o.AppRoleMount = v.Auth.AppRole.RoleID, v.Auth.AppRole.SecretIDFile, v.Auth.AppRole.Mount
	case "kubernetes":
		o.KubernetesRole, o.KubernetesTokenFile, o.KubernetesMount = v.Auth.Kubernetes.Role, v.Auth.Kubernetes.TokenFile, v.Auth.Kubernetes.Mount
	}
	if v.TLS.SkipVerify {
		log.Warn(field + ".tls.skip_verify is set: Vault's certificate is not checked")
	}
	return o, nil
}
