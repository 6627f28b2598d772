package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/keyd-dev/keyd/backends/file"
	"github.com/keyd-dev/keyd/backends/vault"
	"github.com/keyd-dev/keyd/custody/pkcs11"
	"github.com/keyd-dev/keyd/custody/transit"
	"github.com/keyd-dev/keyd/internal/config"
	"github.com/keyd-dev/keyd/internal/secretfile"
	"github.com/keyd-dev/keyd/keystore"
)

// loginWait bounds how long keyd waits for its first Vault login to unwrap
// the master key (AppRole, Kubernetes auth) before it gives up.
const loginWait = 30 * time.Second

// loadMasterKey reads the master key from storage.file.master_key_file or
// KEYD_MASTER_KEY; exactly one must be set. A key file must not be readable
// by group or others; a wrapped one is unwrapped by the wrapper
// storage.file.master_key names.
func loadMasterKey(ctx context.Context, fc config.File, getenv func(string) string, log *slog.Logger) ([]byte, error) {
	env := getenv(EnvMasterKey)
	switch {
	case fc.MasterKeyFile != "" && env != "":
		return nil, fmt.Errorf("master key: both %s and storage.file.master_key_file are set; keep one", EnvMasterKey)
	case env != "" && fc.MasterKey.WrappedBy != "":
		return nil, fmt.Errorf("%s holds a master key in clear, but storage.file.master_key.wrapped_by is %s: unset %s and point master_key_file at the wrapped key (keyd master-key wrap writes it)", EnvMasterKey, fc.MasterKey.WrappedBy, EnvMasterKey)
	case env != "":
		key, err := file.ParseMasterKey(env)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", EnvMasterKey, err)
		}
		return key, nil
	case fc.MasterKeyFile != "":
		return readKeyFile(ctx, "storage.file.master_key_file", fc.MasterKeyFile, fc.MasterKey, false, getenv, log)
	}
	return nil, fmt.Errorf("missing master key: set %s (base64 of 32 random bytes, e.g. `head -c 32 /dev/urandom | base64`) or storage.file.master_key_file", EnvMasterKey)
}

// readKeyFile reads the master key file at path (field names it): the
// base64 of a key, or a wrapped key, which m's wrapper unwraps. A key in
// clear where m wraps is refused unless clearOK (a key being wrapped).
func readKeyFile(ctx context.Context, field, path string, m config.MasterKey, clearOK bool, getenv func(string) string, log *slog.Logger) ([]byte, error) {
	raw, err := secretfile.Read(path) // owner-only, as every secret file
	if err != nil {
		return nil, fmt.Errorf("%s: %w", field, err)
	}
	if !file.IsWrapped(raw) {
		if m.WrappedBy != "" && !clearOK {
			return nil, fmt.Errorf("%s %s holds a master key in clear, but storage.file.master_key.wrapped_by is %s: wrap it (keyd master-key wrap --config FILE --out NEWFILE), point master_key_file at the new file and destroy this one", field, path, m.WrappedBy)
		}
		key, err := file.ParseMasterKey(string(raw))
		if err != nil {
			return nil, fmt.Errorf("%s %s: %w", field, path, err)
		}
		return key, nil
	}
	wk, err := wrappedFile(field, path, raw, m)
	if err != nil {
		return nil, err
	}
	w, closeW, err := openWrapper(ctx, m, getenv, log)
	if err != nil {
		return nil, err
	}
	defer closeW()
	key, err := wk.Unwrap(ctx, w)
	if err != nil {
		return nil, fmt.Errorf("%s %s: unwrapping master key %s with %s key %s: %w", field, path, wk.KeyID, m.WrappedBy, m.Key, err)
	}
	return key, nil
}

// wrappedFile parses raw, the wrapped master key file at path, and checks
// that m's wrapper is the one that wrapped it.
func wrappedFile(field, path string, raw []byte, m config.MasterKey) (*file.Wrapped, error) {
	wk, err := file.ParseWrapped(raw)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", field, path, err)
	}
	switch {
	case m.WrappedBy == "":
		return nil, fmt.Errorf("%s %s is wrapped by %s (key %s): set storage.file.master_key {wrapped_by: %s, key: %s, ...} so keyd can unwrap it", field, path, wk.WrappedBy, wk.Key, wk.WrappedBy, wk.Key)
	case wk.WrappedBy != m.WrappedBy || wk.Key != m.Key:
		return nil, fmt.Errorf("%s %s is wrapped by %s key %s, but storage.file.master_key names %s key %s", field, path, wk.WrappedBy, wk.Key, m.WrappedBy, m.Key)
	}
	return wk, nil
}

// wrapper is a keystore.KeyWrapper that can make its wrapping key.
type wrapper interface {
	keystore.KeyWrapper
	Ensure(ctx context.Context) (created bool, err error)
}

// openWrapper opens the wrapper m names, and what closes it: a Vault
// connection of its own (logged in before it returns), or a PKCS#11
// token logged in with pin_file or KEYD_PKCS11_PIN.
func openWrapper(ctx context.Context, m config.MasterKey, getenv func(string) string, log *slog.Logger) (wrapper, func(), error) {
	const f = "storage.file.master_key"
	switch m.WrappedBy {
	case transit.Name:
		o, err := vaultOptions(f+".vault", m.Vault, log)
		if err != nil {
			return nil, nil, err
		}
		vs, err := vault.Open(o)
		if err != nil {
			return nil, nil, fmt.Errorf("%s.vault: %w", f, err)
		}
		wait, cancel := context.WithTimeout(ctx, loginWait)
		defer cancel()
		if err := vs.LoggedIn(wait); err != nil {
			_ = vs.Close()
			return nil, nil, fmt.Errorf("%s.vault: %w", f, err)
		}
		return transit.NewWrapper(vs.Client(), m.Mount, m.Key), func() { _ = vs.Close() }, nil
	case pkcs11.Name:
		pin := getenv("KEYD_PKCS11_PIN")
		if m.PINFile != "" {
			raw, err := secretfile.Read(m.PINFile)
			if err != nil {
				return nil, nil, fmt.Errorf("%s.pin_file: %w", f, err)
			}
			pin = strings.TrimSpace(string(raw))
		}
		if pin == "" {
			return nil, nil, fmt.Errorf("%s: no PIN: set pin_file, or KEYD_PKCS11_PIN", f)
		}
		w, err := pkcs11.OpenWrapper(pkcs11.Config{Module: m.Module, TokenLabel: m.TokenLabel, PIN: pin}, m.Key)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", f, err)
		}
		return w, func() { _ = w.Close() }, nil
	}
	return nil, nil, errors.New("storage.file.master_key.wrapped_by is not set: the master key is not wrapped")
}

// checkMasterKey checks, short of opening anything, that fc gives a master
// key: a key in clear is read (and returned), a wrapped file parsed and
// matched with its wrapper's settings (unwrapping it is the start's: the
// key is then nil).
func checkMasterKey(fc config.File, getenv func(string) string) ([]byte, error) {
	if fc.MasterKey.WrappedBy == "" || fc.MasterKeyFile == "" || getenv(EnvMasterKey) != "" {
		return loadMasterKey(context.Background(), fc, getenv, slog.New(slog.DiscardHandler)) // opens nothing here
	}
	raw, err := secretfile.Read(fc.MasterKeyFile)
	if err != nil {
		return nil, fmt.Errorf("storage.file.master_key_file: %w", err)
	}
	if !file.IsWrapped(raw) {
		return nil, fmt.Errorf("storage.file.master_key_file %s holds a master key in clear, but storage.file.master_key.wrapped_by is %s: wrap it (keyd master-key wrap --config FILE --out NEWFILE)", fc.MasterKeyFile, fc.MasterKey.WrappedBy)
	}
	_, err = wrappedFile("storage.file.master_key_file", fc.MasterKeyFile, raw, fc.MasterKey)
	return nil, err
}
