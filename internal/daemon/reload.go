package daemon

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"strings"
	"sync"

	"github.com/keyd-dev/keyd/audit"
	"github.com/keyd-dev/keyd/internal/api"
	"github.com/keyd-dev/keyd/internal/config"
	"github.com/keyd-dev/keyd/internal/tlsconf"
	"github.com/keyd-dev/keyd/jwks"
	"github.com/keyd-dev/keyd/keystore"
	"github.com/keyd-dev/keyd/rotation"
)

// ErrReloadRefused means a new config was not applied; the error says why
// and the old config stays in force, all of it.
var ErrReloadRefused = errors.New("reload refused")

// reloader applies a changed config file to the running daemon (SIGHUP,
// POST /v1/reload): API tokens and clients, key set settings and new key
// sets, TLS files, the issuer URL and the log level. Everything is
// checked and prepared first; only then is anything swapped, so a refused
// reload changes nothing.
type reloader struct {
	path      string
	log       *slog.Logger
	level     *slog.LevelVar
	auth      *api.Authenticator
	tls       *tlsconf.Server // nil without TLS
	mgr       *rotation.Manager
	custodies map[string]keystore.Custody // opened at start
	pub       *jwks.Publisher
	audit     *audit.Log

	mu  sync.Mutex // one reload at a time
	cur *config.Config
}

// Reload re-reads the config file and applies it, or refuses it whole.
func (r *reloader) Reload(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	err := r.apply(ctx)
	if err != nil {
		r.log.Error("config reload refused; the previous config stays in force", "err", err)
		r.audit.Note(audit.Record{Event: audit.EventReloadFailed, Detail: err.Error()})
		return fmt.Errorf("%w: %w", ErrReloadRefused, err)
	}
	r.log.Info("config reloaded", "path", r.path, "keysets", r.mgr.Names())
	r.audit.Note(audit.Record{Event: audit.EventConfigReloaded, Detail: configDetail(r.path, r.cur)})
	return nil
}

func (r *reloader) apply(ctx context.Context) error {
	if r.path == "" {
		return errors.New("the embedded default has no config file to reload; run keyd serve --config FILE")
	}
	next, err := config.Load(r.path)
	if err != nil {
		return err
	}
	if fields := restartOnly(r.cur, next); len(fields) > 0 {
		return fmt.Errorf("%s changed: that needs a restart", strings.Join(fields, ", "))
	}
	ps, err := policies(next, r.custodies) // reads the CA files anew
	if err != nil {
		return err
	}
	var tlsConfig *tls.Config
	if next.TLS.On() {
		if tlsConfig, err = tlsconf.Build(next.TLS); err != nil {
			return err
		}
	}
	// The issuer first (it changes nothing when it fails), the key sets
	// last among what can fail: new key sets are created in the store, the
	// one step that writes; refused, the issuer goes back. What follows
	// cannot fail: a refused reload changes nothing.
	if err := r.pub.SetIssuer(next.IssuerURL); err != nil {
		return err
	}
	if err := r.mgr.Reconfigure(ctx, ps); err != nil {
		_ = r.pub.SetIssuer(r.cur.IssuerURL) // renders what it rendered before
		return err
	}
	if tlsConfig != nil {
		r.tls.Set(tlsConfig)
	}
	r.auth.Update(next.Auth.Tokens, next.Auth.Clients)
	if next.LogLevel != "" {
		_ = r.level.UnmarshalText([]byte(next.LogLevel)) // validated
	}
	r.cur = next
	return nil
}

// restartOnly lists the settings that differ between a and b and that a
// running daemon cannot change: where it listens, its store, where
// metrics and audit records go, whether it speaks TLS.
func restartOnly(a, b *config.Config) []string {
	var out []string
	for _, f := range []struct {
		name string
		a, b any
	}{
		{"listen", a.Listen, b.Listen},
		{"storage", a.Storage, b.Storage},
		{"metrics", a.Metrics, b.Metrics},
		{"audit", a.Audit, b.Audit},
		{"tls (turning it on or off)", a.TLS.On(), b.TLS.On()},
		{"kubernetes", a.Kubernetes, b.Kubernetes},
	} {
		if !reflect.DeepEqual(f.a, f.b) {
			out = append(out, f.name)
		}
	}
	return append(out, custodies(a, b)...)
}
