// Package redis is the token state engine on Redis (or Valkey): each
// revocation is one key with Redis's own expiry (no sweeps), written and
// merged atomically by a Lua script that also publishes it, so that every
// replica's index hears a revocation at once and resynchronises after a
// reconnect. It uses github.com/redis/go-redis/v9, whose universal client
// covers one node, Sentinel and Cluster.
package redis

import (
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/keyd-dev/keyd/internal/parallel"
	"github.com/keyd-dev/keyd/keystore"
	"github.com/keyd-dev/keyd/tokenstate"
)

// Store keeps revocations in Redis.
type Store struct {
	c        goredis.UniversalClient
	prefix   string
	pl       *pipeliner // revocation writes, login reads and writes: the hot commands
	sealer   Sealer     // nil: entries in clear (see SealWith)
	rejected func()
	// entryLocks make sealed writes of one entry take turns (by id hash).
	entryLocks [64]sync.Mutex
}

var (
	_ tokenstate.Store   = (*Store)(nil)
	_ tokenstate.Watcher = (*Store)(nil)
)

// New returns the engine over c, with its keys under prefix (e.g.
// "keyd:"), so that several keyd deployments can share one Redis.
func New(c goredis.UniversalClient, prefix string) *Store {
	return &Store{c: c, prefix: prefix, pl: newPipeliner(c, DefaultMaxInFlight, 5*time.Second)}
}

// script runs sc through the pipeliner (EVALSHA); when Redis does not
// know the script yet (a new or restarted server: NOSCRIPT, nothing run),
// it runs it alone, which loads it.
func (s *Store) script(ctx context.Context, sc *goredis.Script, keys []string, args ...any) *goredis.Cmd {
	cmd := s.pl.do(func(p goredis.Pipeliner) goredis.Cmder { return sc.EvalSha(ctx, p, keys, args...) }).(*goredis.Cmd)
	if err := cmd.Err(); err != nil && goredis.HasErrorPrefix(err, "NOSCRIPT") {
		return sc.Run(ctx, s.c, keys, args...)
	}
	return cmd
}

// Revocations live under one hash tag, {rev}: each entry's key and the
// index of them all (a sorted set of their ids by expiry) are in one slot
// of a Redis Cluster, so the script that writes both runs there, and a
// start-up reads the index, not every key in Redis.
func (s *Store) key(r tokenstate.Revocation) string { return s.entryKey(r.ID()) }
func (s *Store) entryKey(id string) string          { return s.prefix + "{rev}:" + id }
func (s *Store) index() string                      { return s.prefix + "{rev}" }
func (s *Store) layoutKey() string                  { return s.prefix + "{rev}:layout" }

// oldPattern matches the keys of revocations written before the index
// (keyd:rev:ID), moved at the first start that finds them.
func (s *Store) oldPattern() string { return s.prefix + "rev:*" }
func (s *Store) channel() string    { return s.prefix + "revocations" }

// entry is a revocation as Redis holds it (times in Unix milliseconds,
// which Lua compares as numbers).
type entry struct {
	KeySet    string `json:"keyset"`
	JTI       string `json:"jti"`
	Subject   string `json:"sub"`
	BeforeMS  int64  `json:"before_ms"`
	ExpiresMS int64  `json:"expires_ms"`
	RevokedMS int64  `json:"revoked_ms"`
	Reason    string `json:"reason"`
}

func toEntry(r tokenstate.Revocation) entry {
	e := entry{KeySet: r.KeySet, JTI: r.JTI, Subject: r.Subject, ExpiresMS: r.Expires.UnixMilli(), RevokedMS: r.RevokedAt.UnixMilli(), Reason: r.Reason}
	if !r.Before.IsZero() {
		e.BeforeMS = r.Before.UnixMilli()
	}
	return e
}

func (e entry) revocation() tokenstate.Revocation {
	r := tokenstate.Revocation{KeySet: e.KeySet, JTI: e.JTI, Subject: e.Subject, Expires: time.UnixMilli(e.ExpiresMS).UTC(),
		RevokedAt: time.UnixMilli(e.RevokedMS).UTC(), Reason: e.Reason}
	if e.BeforeMS != 0 {
		r.Before = time.UnixMilli(e.BeforeMS).UTC()
	}
	return r
}

// put merges the new entry into the stored one (later expiry, later
// cut-off), stores it with its expiry, records its id in the index with
// that expiry, and publishes it (unless the channel is empty), atomically.
// Its keys (the entry's, the index) share the {rev} hash tag; the channel
// is an argument, not a key (a PUBLISH reaches every node of a Redis
// Cluster from any of them), so the script runs on a cluster too.
var put = goredis.NewScript(`
local new = cjson.decode(ARGV[1])
local cur = redis.call('GET', KEYS[1])
if cur then
  local old = cjson.decode(cur)
  if old.expires_ms > new.expires_ms then new.expires_ms = old.expires_ms end
  if old.before_ms > new.before_ms then new.before_ms = old.before_ms; new.revoked_ms = old.revoked_ms end
  if new.reason == '' then new.reason = old.reason end
end
local s = cjson.encode(new)
redis.call('SET', KEYS[1], s, 'PXAT', new.expires_ms)
redis.call('ZADD', KEYS[2], new.expires_ms, ARGV[3])
if ARGV[2] ~= '' then redis.call('PUBLISH', ARGV[2], s) end
return s
`)

func unavailable(err error) error {
	switch {
	case err == nil || errors.Is(err, context.Canceled):
		return err
	case errors.Is(err, context.DeadlineExceeded):
		// The pipelines' own deadline, or the caller's: Redis did not
		// answer in time (frozen, overloaded), a 503 store_unavailable.
		return fmt.Errorf("%w: redis did not answer in time", keystore.ErrUnavailable)
	}
	return fmt.Errorf("%w: redis: %v", keystore.ErrUnavailable, err)
}

// Ping asks Redis for an answer within a second: /readyz uses it to see a
// Redis that failed come back without waiting for the next write.
func (s *Store) Ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	return unavailable(s.c.Ping(ctx).Err())
}

// PutRevocation implements tokenstate.Store.
func (s *Store) PutRevocation(ctx context.Context, r tokenstate.Revocation) (tokenstate.Revocation, error) {
	if s.sealer != nil {
		return s.putRevocationSealed(ctx, r, s.channel())
	}
	arg, _ := json.Marshal(toEntry(r))
	out, err := s.script(ctx, put, []string{s.key(r), s.index()}, arg, s.channel(), r.ID()).Text()
	if err != nil {
		return tokenstate.Revocation{}, unavailable(err)
	}
	var e entry
	if err := json.Unmarshal([]byte(out), &e); err != nil {
		return tokenstate.Revocation{}, fmt.Errorf("%w: redis answered %v", keystore.ErrCorrupt, err)
	}
	return e.revocation(), nil
}

// Revocations implements tokenstate.Store: the index read by ZSCAN (an
// entry present throughout is read at least once, whatever changes
// meanwhile), the entries of each batch in one MGET sent with the next
// ZSCAN, decoded on every processor while the next batch is read (add is
// called from several goroutines at once). Ids whose expiry has passed
// are skipped. The first call on a Redis written by an older keyd moves
// its entries under the index first.
func (s *Store) Revocations(ctx context.Context, add func(tokenstate.Revocation)) error {
	if err := s.migrate(ctx); err != nil {
		return err
	}
	type batch struct{ keys, vals []string }
	batches := make(chan batch, 4)
	var bad atomic.Pointer[error]
	var wg sync.WaitGroup
	for range runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			for b := range batches {
				for i, v := range b.vals {
					r, ok, err := s.decode(b.keys[i], v)
					if err != nil {
						bad.CompareAndSwap(nil, &err)
						continue
					}
					if ok {
						add(r)
					}
				}
			}
		})
	}
	err := s.readIndex(ctx, func(keys, vals []string) error {
		if p := bad.Load(); p != nil {
			return *p
		}
		select {
		case batches <- batch{keys, vals}:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	})
	close(batches)
	wg.Wait()
	if p := bad.Load(); err == nil && p != nil {
		err = *p
	}
	return err
}

// readIndex calls batch with the stored entries the index names, a ZSCAN
// batch at a time; ids whose expiry has passed are not read. The entries
// share the index's slot, so one MGET reads a batch even on a cluster.
func (s *Store) readIndex(ctx context.Context, batch func(keys, vals []string) error) error {
	now := float64(time.Now().UnixMilli())
	zscan := func(c goredis.Cmdable, cursor uint64) *goredis.ScanCmd {
		return c.ZScan(ctx, s.index(), cursor, "", scanCount)
	}
	live := func(page []string) []string { // member, score (the expiry), ...
		var keys []string
		for i := 0; i+1 < len(page); i += 2 {
			if exp, err := strconv.ParseFloat(page[i+1], 64); err != nil || exp >= now {
				keys = append(keys, s.entryKey(page[i]))
			}
		}
		return keys
	}
	return scanValues(ctx, s.c, zscan, live, true, batch)
}

// migrate moves the entries an older keyd wrote (one key each, no index)
// under the index, once per Redis: each is written again by the put
// script (merged, with its expiry, not published), then its old key is
// deleted; a marker says it is done. Replicas migrating at once write
// the same entries; merging makes that harmless.
func (s *Store) migrate(ctx context.Context) error {
	done, err := s.c.Exists(ctx, s.layoutKey()).Result()
	if err != nil {
		return unavailable(err)
	}
	if done == 1 {
		return nil
	}
	err = s.scanBatches(ctx, s.oldPattern(), func(keys, vals []string) error {
		// Each batch's entries moved at once: the pipeliner gathers their
		// writes and deletions into a few round trips.
		errs := make([]error, len(keys))
		parallel.Each(len(keys), 64, func(i int) { errs[i] = s.moveOld(ctx, keys[i], vals[i]) })
		return errors.Join(errs...)
	})
	if err != nil {
		return err
	}
	return unavailable(s.c.Set(ctx, s.layoutKey(), "2", 0).Err())
}

// moveOld writes the entry val of the old layout's key under the index,
// then deletes key.
func (s *Store) moveOld(ctx context.Context, key, val string) error {
	var e entry
	if err := json.Unmarshal([]byte(val), &e); err != nil {
		return fmt.Errorf("%w: redis revocation %s: %v", keystore.ErrCorrupt, key, err)
	}
	r := e.revocation()
	if err := s.script(ctx, put, []string{s.key(r), s.index()}, val, "", r.ID()).Err(); err != nil {
		return unavailable(err)
	}
	return unavailable(s.pl.do(func(p goredis.Pipeliner) goredis.Cmder { return p.Del(ctx, key) }).Err())
}

// scan calls fn with each key matching pattern and its value, one at a
// time; keys that expire meanwhile are skipped.
func (s *Store) scan(ctx context.Context, pattern string, fn func(key, val string) error) error {
	var mu sync.Mutex // the masters of a cluster are scanned at once
	return s.scanBatches(ctx, pattern, func(keys, vals []string) error {
		mu.Lock()
		defer mu.Unlock()
		for i := range keys {
			if err := fn(keys[i], vals[i]); err != nil {
				return err
			}
		}
		return nil
	})
}

// scanBatches calls batch with the keys matching pattern and their
// values, a SCAN batch at a time, on every master of a Redis Cluster (at
// once: batch may be called from several goroutines).
func (s *Store) scanBatches(ctx context.Context, pattern string, batch func(keys, vals []string) error) error {
	if cc, ok := s.c.(*goredis.ClusterClient); ok {
		return unavailable(cc.ForEachMaster(ctx, func(ctx context.Context, node *goredis.Client) error {
			return scanNode(ctx, node, pattern, false, batch)
		}))
	}
	return scanNode(ctx, s.c, pattern, true, batch)
}

// scanCount is the COUNT of each SCAN: how many keys Redis looks at per
// call.
const scanCount = 5000

// scanNode scans one server's keys matching pattern with their values
// (see scanValues).
func scanNode(ctx context.Context, c goredis.Cmdable, pattern string, mget bool, batch func(keys, vals []string) error) error {
	scan := func(c goredis.Cmdable, cursor uint64) *goredis.ScanCmd {
		return c.Scan(ctx, cursor, pattern, scanCount)
	}
	return scanValues(ctx, c, scan, func(page []string) []string { return page }, mget, batch)
}

// scanValues walks a cursor (scan makes the command for a cursor, on c or
// in a pipeline), turns each page into the keys to read (keysOf), and
// reads their values in one round trip with the next page: by one MGET
// (mget) or by pipelined GETs (on a cluster node, whose page's keys may
// lie in different slots, which MGET refuses). Keys gone meanwhile are
// left out.
func scanValues(ctx context.Context, c goredis.Cmdable, scan func(c goredis.Cmdable, cursor uint64) *goredis.ScanCmd,
	keysOf func(page []string) []string, mget bool, batch func(keys, vals []string) error) error {
	page, cursor, err := scan(c, 0).Result()
	if err != nil {
		return unavailable(err)
	}
	for {
		keys := keysOf(page)
		var gets []*goredis.StringCmd
		var all *goredis.SliceCmd
		var next *goredis.ScanCmd
		_, err := c.Pipelined(ctx, func(p goredis.Pipeliner) error {
			switch {
			case len(keys) == 0:
			case mget:
				all = p.MGet(ctx, keys...)
			default:
				gets = make([]*goredis.StringCmd, len(keys))
				for i, k := range keys {
					gets[i] = p.Get(ctx, k)
				}
			}
			if cursor != 0 {
				next = scan(p, cursor)
			}
			return nil
		})
		if err != nil && !errors.Is(err, goredis.Nil) {
			return unavailable(err)
		}
		found, vals := make([]string, 0, len(keys)), make([]string, 0, len(keys))
		for i, g := range gets {
			if v, err := g.Result(); err == nil {
				found, vals = append(found, keys[i]), append(vals, v)
			}
		}
		if all != nil {
			for i, v := range all.Val() {
				if v, ok := v.(string); ok { // nil: expired meanwhile
					found, vals = append(found, keys[i]), append(vals, v)
				}
			}
		}
		if len(found) > 0 {
			if err := batch(found, vals); err != nil {
				return err
			}
		}
		if next == nil {
			return nil
		}
		if page, cursor, err = next.Result(); err != nil {
			return unavailable(err)
		}
	}
}

// PruneRevocations implements tokenstate.Store: Redis expires the entries
// itself; what is left is their ids in the index, removed here.
func (s *Store) PruneRevocations(ctx context.Context, now time.Time) (int, error) {
	n, err := s.c.ZRemRangeByScore(ctx, s.index(), "-inf", "("+strconv.FormatInt(now.UnixMilli(), 10)).Result()
	return int(n), unavailable(err)
}

// Watch implements tokenstate.Watcher: every revocation published by any
// replica goes to add; on every (re)subscription, resync is called first,
// so that what was published while the connection was down is not missed.
// It returns when ctx is done.
func (s *Store) Watch(ctx context.Context, add func(tokenstate.Revocation), resync func(context.Context) error) error {
	sub := s.c.Subscribe(ctx, s.channel())
	defer sub.Close()
	// A blocked Receive ignores a cancelled context (go-redis honours
	// deadlines only): closing the subscription ends it.
	stop := context.AfterFunc(ctx, func() { _ = sub.Close() })
	defer stop()
	for {
		msg, err := sub.Receive(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			// go-redis reconnects on the next Receive; the subscription
			// confirmation that follows triggers the resync.
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(100 * time.Millisecond):
			}
			continue
		}
		switch m := msg.(type) {
		case *goredis.Subscription:
			if m.Kind == "subscribe" {
				if err := resync(ctx); err != nil && ctx.Err() == nil {
					// The next reconnect, or the next message, tries again.
					continue
				}
			}
		case *goredis.Message:
			if r, ok, _ := s.decode("", m.Payload); ok {
				add(r)
			}
		}
	}
}

// Options connect to Redis.
type Options struct {
	URL          string // redis://host:port/db, or rediss:// for TLS
	Username     string
	Password     string // read from a file by the caller, never from the config
	TLSCAFile    string // CA bundle for rediss://; default the system's
	Prefix       string // default "keyd:"
	Logger       *slog.Logger
	DialTimeout  time.Duration // default 2 s
	ReadTimeout  time.Duration // default 2 s
	WriteTimeout time.Duration // default 2 s
}

// Open connects to Redis and checks that it answers (PING); go-redis's
// own log lines go to o.Logger at warn. A url with master_name is
// Sentinel's: redis://sentinel1:26379/0?master_name=keyd&addr=sentinel2:26379
// (the username and password then are the master's, from Options). A url
// with cluster=true, or with more nodes as addr, is a Redis Cluster's:
// redis://node1:7000?addr=node2:7000&addr=node3:7000 (its other nodes are
// discovered; every key keyd writes is alone in its script, and listings
// scan every master).
func Open(ctx context.Context, o Options) (*Store, error) {
	if u, err := url.Parse(o.URL); err == nil {
		q := u.Query()
		switch {
		case q.Get("master_name") != "":
			return openFailover(ctx, o)
		case q.Get("cluster") == "true" || q.Has("addr"):
			q.Del("cluster")
			u.RawQuery = q.Encode()
			o.URL = u.String()
			return openCluster(ctx, o)
		}
	}
	opts, err := goredis.ParseURL(o.URL)
	if err != nil {
		return nil, errors.New("storage.token_state.url does not parse (redis://host:port/db)")
	}
	if err := o.apply(&opts.Username, &opts.Password, opts.TLSConfig, &opts.DialTimeout, &opts.ReadTimeout, &opts.WriteTimeout); err != nil {
		return nil, err
	}
	return o.connect(ctx, goredis.NewClient(opts), "redis at "+opts.Addr)
}

// openCluster connects to a Redis Cluster through the nodes it names.
func openCluster(ctx context.Context, o Options) (*Store, error) {
	co, err := goredis.ParseClusterURL(o.URL)
	if err != nil {
		return nil, errors.New("storage.token_state.url does not parse (redis://node1:7000?addr=node2:7000&addr=node3:7000)")
	}
	if err := o.apply(&co.Username, &co.Password, co.TLSConfig, &co.DialTimeout, &co.ReadTimeout, &co.WriteTimeout); err != nil {
		return nil, err
	}
	return o.connect(ctx, goredis.NewClusterClient(co), fmt.Sprintf("redis cluster at %v", co.Addrs))
}

// apply sets on a client's options what o gives beyond the url: the
// username and password when given (nil: the caller sets them), the CA
// for TLS, the timeouts (2 s by default), and go-redis's log.
func (o Options) apply(username, password *string, tlsConf *tls.Config, dial, read, write *time.Duration) error {
	if username != nil && o.Username != "" {
		*username = o.Username
	}
	if password != nil && o.Password != "" {
		*password = o.Password
	}
	if o.TLSCAFile != "" && tlsConf != nil {
		roots, err := rootCAs(o.TLSCAFile)
		if err != nil {
			return err
		}
		tlsConf.RootCAs = roots
	}
	*dial, *read, *write = cmp.Or(o.DialTimeout, 2*time.Second), cmp.Or(o.ReadTimeout, 2*time.Second), cmp.Or(o.WriteTimeout, 2*time.Second)
	if o.Logger != nil {
		goredis.SetLogger(slogLogger{o.Logger})
	}
	return nil
}

// connect makes the store on c once c answers a PING; c is closed if it
// does not, and the error names where (never the password).
func (o Options) connect(ctx context.Context, c goredis.UniversalClient, where string) (*Store, error) {
	if err := c.Ping(ctx).Err(); err != nil {
		_ = c.Close()
		return nil, fmt.Errorf("%w: %s: %v", keystore.ErrUnavailable, where, err)
	}
	return New(c, cmp.Or(o.Prefix, "keyd:")), nil
}

// openFailover connects through Sentinel to the master it names.
func openFailover(ctx context.Context, o Options) (*Store, error) {
	fo, err := goredis.ParseFailoverURL(o.URL)
	if err != nil {
		return nil, errors.New("storage.token_state.url does not parse (redis://sentinel:26379/db?master_name=NAME&addr=sentinel2:26379)")
	}
	fo.Username, fo.Password = o.Username, o.Password // the master's, given or not
	if err := o.apply(nil, nil, fo.TLSConfig, &fo.DialTimeout, &fo.ReadTimeout, &fo.WriteTimeout); err != nil {
		return nil, err
	}
	return o.connect(ctx, goredis.NewFailoverClient(fo), "redis master "+fo.MasterName+" through sentinel")
}

// rootCAs reads the CA bundle that signed Redis's certificate.
func rootCAs(file string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("storage.token_state.tls_ca_file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("storage.token_state.tls_ca_file: %s holds no PEM certificate", file)
	}
	return pool, nil
}

// Close closes the connections.
func (s *Store) Close() error { return s.c.Close() }

type slogLogger struct{ l *slog.Logger }

func (s slogLogger) Printf(_ context.Context, format string, v ...any) {
	s.l.Warn("redis: " + fmt.Sprintf(format, v...))
}
