package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"

	"github.com/keyd-dev/keyd/backends/file"
	"github.com/keyd-dev/keyd/internal/config"
	"github.com/keyd-dev/keyd/internal/secretfile"
)

// The operations of keyd master-key: each on a stopped keyd's files.

// RotateMasterKey seals the bbolt file of cfg under the master key in
// newKeyFile (in clear, or wrapped by the wrapper cfg names) instead of
// the one cfg gives (file.Rekey): keyd must be stopped. It returns what it
// sealed again and the two keys' ids.
func RotateMasterKey(ctx context.Context, cfg *config.Config, newKeyFile string, getenv func(string) string, log *slog.Logger) (st file.RekeyStats, oldID, newID string, err error) {
	if cfg.Storage.Backend != "file" {
		return st, "", "", fmt.Errorf("storage.backend is %s: Vault encrypts what it stores itself, keyd holds no master key there (rotate Vault's own keys: vault operator rotate)", cfg.Storage.Backend)
	}
	oldKey, err := loadMasterKey(ctx, cfg.Storage.File, getenv, log)
	if err != nil {
		return st, "", "", err
	}
	newKey, err := readKeyFile(ctx, "--new-key-file", newKeyFile, cfg.Storage.File.MasterKey, true, getenv, log)
	if err != nil {
		return st, "", "", err
	}
	st, err = file.Rekey(cfg.Storage.File.Path, oldKey, newKey)
	if errors.Is(err, file.ErrLocked) {
		err = fmt.Errorf("%w: stop keyd first; the rotation writes the file anew and swaps it in whole", err)
	}
	return st, file.KeyID(oldKey), file.KeyID(newKey), err
}

// MasterKeyID is the id of the master key fc gives (file.KeyID); a
// wrapped key file's id is read from the file, without unwrapping it.
func MasterKeyID(fc config.File, getenv func(string) string) (string, error) {
	if fc.MasterKeyFile != "" {
		raw, err := secretfile.Read(fc.MasterKeyFile)
		if err != nil {
			return "", fmt.Errorf("%s: %w", fc.MasterKeyFile, err)
		}
		if file.IsWrapped(raw) {
			wk, err := file.ParseWrapped(raw)
			if err != nil {
				return "", fmt.Errorf("%s: %w", fc.MasterKeyFile, err)
			}
			return wk.KeyID, nil
		}
	}
	key, err := loadMasterKey(context.Background(), fc, getenv, slog.New(slog.DiscardHandler))
	if err != nil {
		return "", err
	}
	return file.KeyID(key), nil
}

// WrapResult says what WrapMasterKey did.
type WrapResult struct {
	KeyID   string // the master key's id
	Created bool   // the wrapping key was made (it did not exist)
}

// WrapMasterKey writes into out the master key wrapped by the wrapper of
// m: key, or when key is nil the key in from (in clear, or wrapped: then
// wrapped again, under the wrapping key's newest version). out must not
// exist, unless it is from (wrapping a file again in place). It is
// written beside, synced, and renamed into place, owner-only.
func WrapMasterKey(ctx context.Context, m config.MasterKey, key []byte, from, out string, getenv func(string) string, log *slog.Logger) (WrapResult, error) {
	var res WrapResult
	if m.WrappedBy == "" {
		return res, errors.New("storage.file.master_key.wrapped_by is not set: say who wraps the key (vault_transit or pkcs11) in the config first")
	}
	if key == nil {
		var err error
		if key, err = readKeyFile(ctx, "master key file", from, m, true, getenv, log); err != nil {
			return res, err
		}
	}
	if _, err := os.Lstat(out); err == nil && !sameFile(out, from) {
		return res, fmt.Errorf("%s exists: give a new file (only the key file being wrapped again may be replaced)", out)
	}
	w, closeW, err := openWrapper(ctx, m, getenv, log)
	if err != nil {
		return res, err
	}
	defer closeW()
	if res.Created, err = w.Ensure(ctx); err != nil {
		return res, err
	}
	data, err := file.WrapMasterKey(ctx, w, m.WrappedBy, m.Key, key)
	if err != nil {
		return res, err
	}
	res.KeyID = file.KeyID(key)
	return res, secretfile.Write(out, data)
}

func sameFile(a, b string) bool {
	if b == "" {
		return false
	}
	fa, errA := os.Stat(a)
	fb, errB := os.Stat(b)
	return errA == nil && errB == nil && os.SameFile(fa, fb)
}

// LoadMasterKey is the master key fc (or KEYD_MASTER_KEY) gives, unwrapped
// when it is wrapped.
func LoadMasterKey(ctx context.Context, fc config.File, getenv func(string) string, log *slog.Logger) ([]byte, error) {
	return loadMasterKey(ctx, fc, getenv, log)
}
