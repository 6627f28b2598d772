package daemon

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/keyd-dev/keyd/backends/file"
	"github.com/keyd-dev/keyd/internal/config"
)

// DefaultDataDir is where the embedded default keeps its files.
const DefaultDataDir = "./keyd-data"

// Files of the embedded default, inside its data folder.
const (
	MasterKeyFileName  = "master.key"
	AdminTokenFileName = "admin.token"
	DBFileName         = "keyd.db"
)

// AdminTokenName is the name the generated admin token has in logs.
const AdminTokenName = "admin"

// PrepareDefault returns the embedded default configuration for dataDir:
// the bbolt file there, the master key from KEYD_MASTER_KEY or from
// dataDir/master.key, and one token from dataDir/admin.token with the
// scopes admin, sign:* and verify:*. On first start it makes the folder
// (0700) and both files (0600) and logs their paths, never their contents.
func PrepareDefault(dataDir string, getenv func(string) string, log *slog.Logger) (*config.Config, error) {
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, fmt.Errorf("data folder: %w", err)
	}
	cfg := config.Default()
	cfg.Storage.File.Path = filepath.Join(dataDir, DBFileName)

	if getenv(EnvMasterKey) == "" {
		keyPath := filepath.Join(dataDir, MasterKeyFileName)
		cfg.Storage.File.MasterKeyFile = keyPath
		if _, err := os.Stat(keyPath); errors.Is(err, fs.ErrNotExist) {
			if _, err := os.Stat(cfg.Storage.File.Path); err == nil {
				return nil, fmt.Errorf("%s exists but its master key %s is missing: restore the key file, or set %s", cfg.Storage.File.Path, keyPath, EnvMasterKey)
			}
			key, err := file.NewMasterKey()
			if err != nil {
				return nil, err
			}
			if err := writeNewSecretFile(keyPath, key+"\n"); err != nil {
				return nil, err
			}
			log.Warn("generated a master key; back it up: without it the keys in the database cannot be read", "path", keyPath)
		}
	}

	tokenPath := filepath.Join(dataDir, AdminTokenFileName)
	if _, err := os.Stat(tokenPath); errors.Is(err, fs.ErrNotExist) {
		tok, err := NewToken()
		if err != nil {
			return nil, err
		}
		if err := writeNewSecretFile(tokenPath, tok+"\n"); err != nil {
			return nil, err
		}
		log.Info("generated an admin token (scopes admin, sign:*, verify:*); use it with: export KEYD_TOKEN=$(cat "+tokenPath+")", "path", tokenPath)
	}
	raw, err := os.ReadFile(tokenPath)
	if err != nil {
		return nil, fmt.Errorf("admin token: %w", err)
	}
	tok := strings.TrimSpace(string(raw))
	if tok == "" {
		return nil, fmt.Errorf("admin token file %s is empty", tokenPath)
	}
	cfg.Auth.Tokens = []config.Token{{
		Name: AdminTokenName, SHA256: config.TokenHash(tok),
		Scopes: []string{config.ScopeAdmin, config.ScopeSign + ":*", config.ScopeVerify + ":*"},
	}}
	return cfg, cfg.Validate()
}

// NewToken returns a fresh random API token (32 bytes, base64url).
func NewToken() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return "keyd_" + base64.RawURLEncoding.EncodeToString(b), nil
}

// writeNewSecretFile writes content to a new file of mode 0600 at path, all
// or nothing: a temporary file is written, synced and then linked into
// place, which fails if path exists.
func writeNewSecretFile(path, content string) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-"+filepath.Base(path)+"-*")
	if err != nil {
		return fmt.Errorf("data folder %s is not writable (it must hold %s): %w", filepath.Dir(path), filepath.Base(path), errors.Unwrap(err))
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.WriteString(content); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Link(tmp.Name(), path); err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	return nil
}
