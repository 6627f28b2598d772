package daemon

import (
	"cmp"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/keyd-dev/keyd/audit"
	"github.com/keyd-dev/keyd/backends/file"
	"github.com/keyd-dev/keyd/internal/bucket"
	"github.com/keyd-dev/keyd/internal/config"
	"github.com/keyd-dev/keyd/internal/secretfile"
	"github.com/keyd-dev/keyd/internal/tlsconf"
	"github.com/keyd-dev/keyd/keystore"
)

// InitConfig writes, to out, a config file that serves what the quick
// start (`keyd serve` without --config) made in dataDir: the same
// database, master key file and admin token (by its hash), the same key
// set. The folder is prepared as the quick start would if it is new. The
// file is checked by loading it before it is put in place, and an
// existing file is not replaced. It serves on listen (default: the quick
// start's address).
func InitConfig(dataDir, out, listen string, getenv func(string) string, log *slog.Logger) error {
	if _, _, err := net.SplitHostPort(listen); listen != "" && err != nil {
		return fmt.Errorf("--listen %q: want HOST:PORT, e.g. 127.0.0.1:8080: %v", listen, err)
	}
	cfg, err := PrepareDefault(dataDir, getenv, log)
	if err != nil {
		return err
	}
	if listen != "" {
		cfg.Listen = listen
	}
	abs := func(p string) string {
		if a, err := filepath.Abs(p); err == nil {
			return a
		}
		return p
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# Written by `keyd init` from the quick start's data folder %s:\n", abs(dataDir))
	fmt.Fprintf(&b, "# `keyd serve --config %s` serves the same keys with the same admin token.\n", out)
	b.WriteString("# Every field is documented in configs/keyd.yaml.\n")
	fmt.Fprintf(&b, "listen: %q\n", cfg.Listen)
	b.WriteString("storage:\n  backend: file\n  file:\n")
	fmt.Fprintf(&b, "    path: %q\n", abs(cfg.Storage.File.Path))
	if cfg.Storage.File.MasterKeyFile != "" {
		fmt.Fprintf(&b, "    master_key_file: %q\n", abs(cfg.Storage.File.MasterKeyFile))
	} else {
		fmt.Fprintf(&b, "    # the master key comes from %s, as it did for the quick start\n", EnvMasterKey)
	}
	b.WriteString("keysets:\n")
	for _, ks := range cfg.KeySets {
		fmt.Fprintf(&b, "  - name: %s\n    algorithm: %s\n    rotation: %q\n    token_ttl: %s\n    jwks_max_age: %s\n    leeway: %s\n",
			ks.Name, ks.Algorithm, ks.Rotation, ks.TokenTTL, ks.JWKSMaxAge, *ks.Leeway)
	}
	b.WriteString("auth:\n  tokens:\n")
	for _, t := range cfg.Auth.Tokens {
		fmt.Fprintf(&b, "    - name: %s\n      sha256: %q   # of %s\n      scopes: [%s]\n", t.Name, t.SHA256,
			abs(filepath.Join(dataDir, AdminTokenFileName)), quoteAll(t.Scopes))
	}
	fmt.Fprintf(&b, "metrics:\n  enabled: %v\n", cfg.Metrics.On())

	if _, err := os.Stat(out); err == nil {
		return fmt.Errorf("%s exists: keyd init does not replace a config; remove it or pick another --out", out)
	}
	tmp := out + ".tmp"
	if err := os.WriteFile(tmp, []byte(b.String()), 0o600); err != nil {
		return fmt.Errorf("writing %s: %w", out, err)
	}
	defer os.Remove(tmp)
	if _, err := config.Load(tmp); err != nil {
		return fmt.Errorf("the written config does not load (a bug): %w", err)
	}
	if err := os.Link(tmp, out); err != nil {
		return fmt.Errorf("writing %s: %w", out, err)
	}
	return nil
}

func quoteAll(ss []string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = fmt.Sprintf("%q", s)
	}
	return strings.Join(q, ", ")
}

// CheckConfig goes through what a start would do with cfg, short of
// opening anything: the master key (where it comes from, its file's mode),
// the TLS files, the audit key file, Vault's secret id file. It returns
// every problem, joined.
func CheckConfig(cfg *config.Config, getenv func(string) string) error {
	var errs []error
	if cfg.Storage.Backend == "file" {
		if key, err := checkMasterKey(cfg.Storage.File, getenv); err != nil {
			errs = append(errs, err)
		} else {
			errs = append(errs, checkStoredLegacy(cfg, key)...)
		}
		if dir := filepath.Dir(cfg.Storage.File.Path); dir != "" {
			if fi, err := os.Stat(dir); err == nil && !fi.IsDir() {
				errs = append(errs, fmt.Errorf("storage.file.path: %s is not a folder", dir))
			}
		}
	}
	if cfg.Storage.Backend == "vault" && cfg.Storage.Vault.Auth.Method == "approle" {
		if _, err := secretfile.Read(cfg.Storage.Vault.Auth.AppRole.SecretIDFile); err != nil {
			errs = append(errs, fmt.Errorf("storage.vault.auth.approle.secret_id_file: %w", err))
		}
	}
	if cfg.Storage.Backend == "vault" && cfg.Storage.Vault.TLS.CAFile != "" {
		errs = append(errs, checkCAFile("storage.vault.tls.ca_file", cfg.Storage.Vault.TLS.CAFile))
	}
	if ts := cfg.Storage.TokenState; ts.Backend == "redis" {
		if ts.PasswordFile != "" {
			if _, err := secretfile.Read(ts.PasswordFile); err != nil {
				errs = append(errs, fmt.Errorf("storage.token_state.password_file: %w", err))
			}
		}
		if ts.TLSCAFile != "" {
			errs = append(errs, checkCAFile("storage.token_state.tls_ca_file", ts.TLSCAFile))
		}
	}
	if _, err := policies(cfg, nil); err != nil {
		errs = append(errs, err) // the certificate authorities' CA files
	}
	errs = append(errs, checkTokens(cfg)...)
	if cfg.TLS.On() {
		if err := (&tlsconf.Server{}).Load(cfg.TLS); err != nil {
			errs = append(errs, err)
		}
	}
	if cfg.Audit.KeyFile != "" {
		if _, err := audit.ReadKeyFile(cfg.Audit.KeyFile); err != nil {
			errs = append(errs, fmt.Errorf("audit.key_file: %w", err))
		}
	}
	if cfg.Backup.Schedule != "" {
		if _, err := backupRecipients(cfg.Backup); err != nil {
			errs = append(errs, err)
		}
		if err := bucket.Check(context.Background(), cfg.Backup.To); err != nil {
			errs = append(errs, fmt.Errorf("backup.to: %w", err))
		}
	}
	for i, pc := range cfg.Publish {
		if err := bucket.Check(context.Background(), pc.To); err != nil {
			errs = append(errs, fmt.Errorf("publish[%d] (%s).to: %w", i, pc.Name, err))
		}
	}
	return errors.Join(errs...)
}

// checkCAFile fails when the CA bundle at path, named field in the config,
// cannot be read or holds no PEM certificate (a start would fail on it).
func checkCAFile(field, path string) error {
	pem, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("%s: %w", field, err)
	}
	if !x509.NewCertPool().AppendCertsFromPEM(pem) {
		return fmt.Errorf("%s: %s holds no PEM certificate", field, path)
	}
	return nil
}

// Checked says what CheckConfig went through for cfg, one line each, for
// keyd config check to list: what was read, and what only a start
// contacts (stores, custodies, publishing targets).
func Checked(cfg *config.Config, getenv func(string) string) []string {
	var out []string
	switch fc := cfg.Storage.File; {
	case cfg.Storage.Backend == "vault":
		v := cfg.Storage.Vault
		out = append(out, fmt.Sprintf("store: Vault KV at %s, %s/%s, auth %s (contacted at start, not now)", cmp.Or(v.Address, "VAULT_ADDR"), v.Mount, v.Prefix, v.Auth.Method))
	case fc.MasterKey.WrappedBy != "":
		out = append(out, fmt.Sprintf("store: bbolt at %s; master key wrapped by %s key %s in %s (read; unwrapped at start, not now)", fc.Path, fc.MasterKey.WrappedBy, fc.MasterKey.Key, fc.MasterKeyFile))
	case getenv(EnvMasterKey) != "":
		out = append(out, fmt.Sprintf("store: bbolt at %s; master key from %s (read)", fc.Path, EnvMasterKey))
	default:
		out = append(out, fmt.Sprintf("store: bbolt at %s; master key in %s (read, owner-only)", fc.Path, fc.MasterKeyFile))
	}
	if ts := cfg.Storage.TokenState; ts.Backend == "redis" {
		out = append(out, fmt.Sprintf("token state: Redis at %s (contacted at start, not now)", redactURL(ts.URL)))
	}
	for _, ks := range cfg.KeySets {
		if t := ks.Custody.Type; t != "" && t != "software" {
			out = append(out, fmt.Sprintf("custody of %s: %s (contacted at start, not now)", ks.Name, t))
		}
	}
	for _, p := range cfg.Publish {
		out = append(out, fmt.Sprintf("publish %s: %s, %s (the driver took the URL; written at start)", p.Name, redactURL(p.To), strings.Join(p.PublishFiles(), " and ")))
	}
	if b := cfg.Backup; b.Schedule != "" {
		out = append(out, fmt.Sprintf("backups: %s to %s, recipients read", b.Schedule, redactURL(b.To)))
	}
	if cfg.TLS.On() {
		out = append(out, "TLS: the certificate and key load")
	}
	if cfg.Audit.KeyFile != "" {
		out = append(out, "audit: the key file reads (owner-only)")
	}
	return out
}

// redactURL is u without a password.
func redactURL(u string) string {
	if p, err := url.Parse(u); err == nil {
		return p.Redacted()
	}
	return u
}

// checkStoredLegacy checks every legacy.kid in force against the bbolt
// file, when it can be read now: it exists, its master key (key) was read
// in clear (nil when wrapped: unwrapping is the start's), and no keyd
// holds it (then a reload checks the kid instead). A kid that names no key that verifies, or a
// legacy.until past the key's verify_until, is an error.
func checkStoredLegacy(cfg *config.Config, key []byte) []error {
	var ps []keystore.Policy
	for _, p := range cfg.Policies() {
		if p.Legacy.KID != "" {
			ps = append(ps, p)
		}
	}
	fc := cfg.Storage.File
	if _, err := os.Stat(fc.Path); len(ps) == 0 || err != nil || key == nil {
		return nil
	}
	ctx := context.Background()
	s, err := file.Open(file.Options{Path: fc.Path, MasterKey: key})
	if err != nil {
		return nil // held by a running keyd, or said at start
	}
	defer func() { _ = s.Close() }()
	var errs []error
	for _, p := range ps {
		ks, err := s.Get(ctx, p.Name)
		if err != nil {
			continue // not created yet
		}
		if err := keystore.CheckLegacy(p, ks, time.Now()); err != nil {
			errs = append(errs, err) // it names the key set and the kid
		}
	}
	return errs
}
