package daemon

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"time"

	"github.com/keyd-dev/keyd/backup"
	"github.com/keyd-dev/keyd/internal/config"
	"github.com/keyd-dev/keyd/internal/secretfile"
	"github.com/keyd-dev/keyd/internal/wait"
	"github.com/keyd-dev/keyd/keystore"
	"github.com/keyd-dev/keyd/refresh"
	"github.com/keyd-dev/keyd/tokenstate"
	"github.com/keyd-dev/keyd/tokenstate/records"
	redisstate "github.com/keyd-dev/keyd/tokenstate/redis"
	"github.com/keyd-dev/keyd/tokenstate/sealed"
)

// openTokenState opens where token revocations live: Redis when
// storage.token_state says so, else the key store's own records. What the
// engine it no longer uses holds comes along (see moveToRedis), or keyd
// refuses to start saying how.
func (d *daemon) openTokenState(ctx context.Context) (tokenstate.Store, error) {
	ts := d.cfg.Storage.TokenState
	ks := d.store
	if err := backup.CheckNotRestoring(ctx, ks); err != nil {
		return nil, err
	}
	if ts.Backend != "redis" {
		if err := checkNotMoved(ctx, ks); err != nil {
			return nil, err
		}
		measured := d.met.Store(ks) // logins and revocations counted as the key store's record operations
		d.stateRecords = measured
		return records.New(measured), nil
	}
	openCtx, cancel := context.WithTimeout(ctx, StartTimeout)
	defer cancel()
	s, recs, target, err := openRedisState(openCtx, ts, ks, d.met.TokenStateRejected, d.log)
	if err != nil {
		return nil, fmt.Errorf("storage.token_state: %w", err)
	}
	d.closers = append(d.closers, func() { _ = s.Close() })
	if err := moveToRedis(ctx, ks, s, recs, target, d.log); err != nil {
		return nil, fmt.Errorf("storage.token_state: moving the key store's revocations and logins to Redis: %w", err)
	}
	d.stateRecords = recs // refresh token logins too, sealed
	d.log.Info("token state on redis", "prefix", cmp.Or(ts.Prefix, "keyd:"))
	return s, nil
}

// openRedisState connects to the Redis of ts and seals its records (logins,
// subject cut-offs) under the key kept in the key store ks
// (tokenstate/sealed), sealing once the records an older keyd wrote in
// clear there. target names that Redis and prefix, never its credentials.
func openRedisState(ctx context.Context, ts config.TokenState, ks keystore.RecordStore, rejected func(string), log *slog.Logger) (*redisstate.Store, *sealed.Records, string, error) {
	var password string
	if ts.PasswordFile != "" {
		raw, err := secretfile.Read(ts.PasswordFile) // owner-only, as every secret file
		if err != nil {
			return nil, nil, "", fmt.Errorf("password_file: %w", err)
		}
		password = strings.TrimSpace(string(raw))
	}
	s, err := redisstate.Open(ctx, redisstate.Options{URL: ts.URL, Username: ts.Username, Password: password, TLSCAFile: ts.TLSCAFile, Prefix: ts.Prefix, Logger: log})
	if err != nil {
		return nil, nil, "", err
	}
	target := "redis:" + cmp.Or(ts.Prefix, "keyd:")
	if u, err := url.Parse(ts.URL); err == nil {
		target += "@" + u.Host + u.Path
	}
	key, migrated, err := sealed.Key(ctx, ks, target)
	if err != nil {
		_ = s.Close()
		return nil, nil, "", fmt.Errorf("the key that seals Redis's records (in the key store): %w", err)
	}
	recs, err := sealed.New(s.Records(), key, rejected)
	if err == nil && !migrated {
		var n int
		if n, err = recs.Migrate(ctx, refresh.Kinds...); err == nil {
			err = sealed.Migrated(ctx, ks, target)
			log.Info("sealed the token state records written in clear by an earlier keyd; from now on an unsealed record is refused", "records", n, "target", target)
		}
	}
	if err == nil {
		err = sealRevocations(ctx, s, recs, ks, target, rejected, log)
	}
	if err != nil {
		_ = s.Close()
		return nil, nil, "", err
	}
	return s, recs, target, nil
}

// sealRevocations makes s seal its revocation entries with recs's key, and
// seals, once per Redis, the entries an earlier keyd wrote in clear (the
// key store remembers it under target's name for revocations).
func sealRevocations(ctx context.Context, s *redisstate.Store, recs *sealed.Records, ks keystore.RecordStore, target string, rejected func(string), log *slog.Logger) error {
	s.SealWith(recs.Entries(records.Kind), func() {
		if rejected != nil {
			rejected(records.Kind)
		}
	})
	revTarget := target + " revocations"
	_, done, err := sealed.Key(ctx, ks, revTarget)
	if err != nil || done {
		return err
	}
	n, err := s.SealOld(ctx)
	if err != nil {
		return fmt.Errorf("sealing the revocations written in clear by an earlier keyd: %w", err)
	}
	if err := sealed.Migrated(ctx, ks, revTarget); err != nil {
		return err
	}
	log.Info("sealed the revocations written in clear by an earlier keyd; from now on an unsealed entry is refused (every replica must run this keyd)", "revocations", n, "target", target)
	return nil
}

// movedKind and movedID name the record in the key store that says where
// its token state went.
const (
	movedKind = "tokenstate-moved"
	movedID   = "state"
)

type movedRecord struct {
	To string    `json:"to"` // the Redis (target) that holds the token state now
	At time.Time `json:"at"`
}

// moveToRedis copies the revocations and logins the key store holds into
// Redis, once per Redis: when storage.token_state changes from the key
// store to Redis (or to another Redis), nothing in force is dropped. The
// key store remembers where they went (so a later switch back refuses to
// start rather than lose what was revoked on Redis since).
func moveToRedis(ctx context.Context, ks keystore.RecordStore, to tokenstate.Store, toRecs keystore.RecordStore, target string, log *slog.Logger) error {
	var m movedRecord
	if r, err := ks.GetRecord(ctx, movedKind, movedID); err == nil {
		_ = json.Unmarshal(r.Data, &m)
	} else if !errors.Is(err, keystore.ErrNotFound) {
		return err
	}
	if m.To == target {
		return nil
	}
	start := time.Now()
	revs, recs, err := tokenstate.Move(ctx, records.New(ks), to, ks, toRecs, refresh.Kinds, refresh.RecordExpiry)
	if err != nil {
		return err
	}
	if err := setMoved(ctx, ks, movedRecord{To: target, At: time.Now().UTC()}); err != nil {
		return err
	}
	log.Warn("moved the token state to Redis: revocations and refresh logins kept in the key store are in force there", "revocations", revs, "records", recs, "target", target, "took", time.Since(start).Round(time.Millisecond))
	return nil
}

func setMoved(ctx context.Context, ks keystore.RecordStore, m movedRecord) error {
	return keystore.UpdateRecord(ctx, ks, movedKind, movedID, func(*keystore.Record) ([]byte, time.Time, error) {
		data, err := json.Marshal(m)
		return data, time.Time{}, err
	})
}

// checkNotMoved refuses to serve token state from the key store once it
// has moved to Redis: what was revoked there since would be lost.
func checkNotMoved(ctx context.Context, ks keystore.RecordStore) error {
	r, err := ks.GetRecord(ctx, movedKind, movedID)
	if errors.Is(err, keystore.ErrNotFound) || errors.Is(err, keystore.ErrUnavailable) {
		return nil // nothing moved; or the store is not up yet (a start that waits for it)
	}
	if err != nil {
		return err
	}
	var m movedRecord
	if json.Unmarshal(r.Data, &m) != nil || m.To == "" {
		return nil
	}
	return fmt.Errorf("storage.token_state: the token state moved to %s on %s: the revocations and logins made since are there, not in the key store, and keyd will not drop them. Put storage.token_state back, or bring them back first with keyd migrate-token-state --config FILE --from-redis redis://HOST:PORT/DB (with the prefix and password_file keyd used)",
		m.To, m.At.Format(time.RFC3339))
}

// MigrateTokenState brings the token state back from a Redis (from) into
// the key store of cfg: every revocation and login there, then the key
// store forgets the move, so keyd starts with storage.token_state on the
// key store again. keyd must be stopped (bbolt refuses a second opener).
func MigrateTokenState(ctx context.Context, cfg *config.Config, from config.TokenState, getenv func(string) string, log *slog.Logger) error {
	eng, err := openStore(ctx, cfg.Storage, getenv, log)
	if err != nil {
		return err
	}
	store := eng.Store
	defer func() { _ = store.Close() }()
	ks := store
	s, recs, target, err := openRedisState(ctx, from, ks, nil, log)
	if err != nil {
		return fmt.Errorf("--from-redis: %w", err)
	}
	defer func() { _ = s.Close() }()
	revs, n, err := tokenstate.Move(ctx, s, records.New(ks), recs, ks, refresh.Kinds, nil)
	if err != nil {
		return err
	}
	if err := setMoved(ctx, ks, movedRecord{}); err != nil {
		return err
	}
	log.Info("brought the token state back into the key store", "revocations", revs, "records", n, "from", target)
	return nil
}

// tokenStateHealth is the token state's last failure (for /readyz);
// probeTokenState asks a failed Redis again every second.
func (d *daemon) tokenStateHealth(context.Context) error { return d.mgr.TokenStateHealth() }

// probeTokenState asks a failed token state (Redis's PING) again every
// second, whoever calls /readyz or nobody: readiness and
// keyd_token_state_up come back within a second or two of Redis answering,
// not at the next write (a Redis paused and resumed drops no connection,
// so nothing else would notice).
func (d *daemon) probeTokenState(ctx context.Context) {
	p, ok := d.tokens.(interface{ Ping(context.Context) error })
	if !ok {
		return
	}
	wait.Every(ctx, time.Second, func() {
		if d.mgr.TokenStateHealth() == nil {
			return
		}
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		if p.Ping(pctx) == nil {
			d.mgr.TokenStateRecovered()
		}
	})
}
