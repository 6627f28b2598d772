package daemon

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/keyd-dev/keyd/internal/config"
	"github.com/keyd-dev/keyd/internal/secretfile"
	"github.com/keyd-dev/keyd/keystore"
	"github.com/keyd-dev/keyd/refresh"
	"github.com/keyd-dev/keyd/tokenstate"
	"github.com/keyd-dev/keyd/tokenstate/records"
	redisstate "github.com/keyd-dev/keyd/tokenstate/redis"
	"github.com/keyd-dev/keyd/tokenstate/sealed"
)

// openTokenState opens where token revocations live: Redis when
// storage.token_state says so, else the key store's own records.
func (d *daemon) openTokenState(ctx context.Context) (tokenstate.Store, error) {
	ts := d.cfg.Storage.TokenState
	if ts.Backend != "redis" {
		if rs, ok := d.store.(keystore.RecordStore); ok { // both backends are
			d.stateRecords = rs
			return records.New(rs), nil
		}
		return nil, nil
	}
	var password string
	if ts.PasswordFile != "" {
		raw, err := secretfile.Read(ts.PasswordFile) // owner-only, as every secret file
		if err != nil {
			return nil, fmt.Errorf("storage.token_state.password_file: %w", err)
		}
		password = strings.TrimSpace(string(raw))
	}
	openCtx, cancel := context.WithTimeout(ctx, StartTimeout)
	defer cancel()
	s, err := redisstate.Open(openCtx, redisstate.Options{URL: ts.URL, Username: ts.Username, Password: password, TLSCAFile: ts.TLSCAFile, Prefix: ts.Prefix, Logger: d.log})
	if err != nil {
		return nil, fmt.Errorf("storage.token_state: %w", err)
	}
	d.closers = append(d.closers, func() { _ = s.Close() })
	recs, err := d.sealRecords(openCtx, s.Records(), ts)
	if err != nil {
		return nil, fmt.Errorf("storage.token_state: %w", err)
	}
	d.stateRecords = recs // refresh token logins too, sealed
	d.log.Info("token state on redis", "prefix", cmp.Or(ts.Prefix, "keyd:"))
	return s, nil
}

// sealRecords seals the records kept in Redis (logins, subject cut-offs)
// under the key kept in the key store (tokenstate/sealed), sealing once
// the records an older keyd wrote in clear there.
func (d *daemon) sealRecords(ctx context.Context, inner keystore.RecordStore, ts config.TokenState) (keystore.RecordStore, error) {
	ks, ok := d.store.(keystore.RecordStore)
	if !ok {
		return nil, errors.New("the key store keeps no records, so it cannot hold the key that seals Redis's records")
	}
	target := "redis:" + cmp.Or(ts.Prefix, "keyd:")
	if u, err := url.Parse(ts.URL); err == nil {
		target += "@" + u.Host + u.Path // never the URL's credentials
	}
	key, migrated, err := sealed.Key(ctx, ks, target)
	if err != nil {
		return nil, fmt.Errorf("the key that seals Redis's records (in the key store): %w", err)
	}
	recs, err := sealed.New(inner, key, d.met.TokenStateRejected)
	if err != nil {
		return nil, err
	}
	if !migrated {
		n, err := recs.Migrate(ctx, refresh.Kind, refresh.SubjectKind)
		if err != nil {
			return nil, fmt.Errorf("sealing the records written before sealing: %w", err)
		}
		if err := sealed.Migrated(ctx, ks, target); err != nil {
			return nil, err
		}
		d.log.Info("sealed the token state records written in clear by an earlier keyd; from now on an unsealed record is refused", "records", n, "target", target)
	}
	return recs, nil
}
