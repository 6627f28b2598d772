// Package daemon wires keyd together and runs it: the store chosen by the
// config, the rotation manager, the signer, the JWKS publisher and the HTTP
// server, with graceful shutdown. It is internal because cmd/keyd and the
// end-to-end tests are its only users; it also prepares the embedded
// default setup (data folder, master key, admin token).
package daemon

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"slices"
	"sync/atomic"
	"time"

	"github.com/keyd-dev/keyd/audit"
	"github.com/keyd-dev/keyd/backup"
	"github.com/keyd-dev/keyd/custody"
	"github.com/keyd-dev/keyd/internal/api"
	"github.com/keyd-dev/keyd/internal/authguard"
	"github.com/keyd-dev/keyd/internal/config"
	"github.com/keyd-dev/keyd/internal/tlsconf"
	"github.com/keyd-dev/keyd/internal/wait"
	"github.com/keyd-dev/keyd/jwks"
	"github.com/keyd-dev/keyd/keystore"
	"github.com/keyd-dev/keyd/kubesigner"
	"github.com/keyd-dev/keyd/metrics"
	"github.com/keyd-dev/keyd/publish"
	"github.com/keyd-dev/keyd/refresh"
	"github.com/keyd-dev/keyd/rotation"
	"github.com/keyd-dev/keyd/signer"
	"github.com/keyd-dev/keyd/tokenstate"
)

// EnvMasterKey names the environment variable holding the master key.
const EnvMasterKey = "KEYD_MASTER_KEY"

// StartTimeout bounds the first attempt to load the key sets before
// listening; later attempts run in the background.
const StartTimeout = 15 * time.Second

// ShutdownTimeout bounds how long in-flight requests may finish after a
// signal.
const ShutdownTimeout = 10 * time.Second

// Options configure Run.
type Options struct {
	Config     *config.Config
	ConfigPath string // the file Config came from; "" for the embedded default
	Listen     string // overrides Config.Listen (keyd serve --listen)
	// Listener, when set, is the API's listener, opened by the caller
	// before anything else (keyd serve opens it before it prepares the
	// data folder, so a port in use fails before anything is on disk).
	Listener net.Listener
	Logger   *slog.Logger
	// LogLevel is the level of Logger's handler, which the config's
	// log_level sets at start and on reload; nil: not adjustable.
	LogLevel  *slog.LevelVar
	Generator keystore.Generator  // default keystore.GenerateMaterial
	Now       func() time.Time    // default time.Now
	Getenv    func(string) string // default os.Getenv
	// Loaded, when set, is called once the key sets and revocations are
	// in memory (keyd serve returns the start-up's garbage to the system
	// and tunes the collector then).
	Loaded func()
}

func (o Options) withDefaults() Options {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Getenv == nil {
		o.Getenv = os.Getenv
	}
	if o.LogLevel == nil {
		o.LogLevel = new(slog.LevelVar)
	}
	return o
}

// daemon is keyd being built and run: Run calls its steps in order, each
// building on what the ones before made, and undoes them in reverse.
type daemon struct {
	o   Options
	cfg *config.Config
	log *slog.Logger

	closers []func() // run in reverse order when Run returns

	ln       net.Listener // the API's
	tlsSrv   *tlsconf.Server
	store    keystore.Store
	engine   *engine // the store's backend: shared or not, its Vault client, mapped pages
	met      *metrics.Metrics
	auditLog *audit.Log
	sg       *signer.Signer
	pub      *jwks.Publisher
	mgr      *rotation.Manager
	startErr error // the first load of the key sets, when it did not finish
	// custodies hold key sets' private keys outside keyd, by key set.
	custodies map[string]keystore.Custody
	tokens    tokenstate.Store // where revocations live (the key store's records, or Redis)
	// stateRecords hold refresh token logins: the key store's records, or
	// Redis's with token_state on Redis.
	stateRecords keystore.RecordStore
	pairs        *refresh.Service
	guard        *authguard.Guard
	reload       *reloader
	apiSrv       *http.Server
	metricsSrv   *http.Server     // metrics.listen, when set
	backups      *backup.Schedule // backup.schedule, when set
	publishers   publish.Set      // publish[]
	lastBackup   backupStatus
	mln          net.Listener // metrics.listen's, when set
	kubeUp       atomic.Bool  // the Kubernetes signer's socket is open
}

// Run builds keyd and serves until ctx is cancelled, then shuts down
// gracefully. It returns an error when start-up fails or a server stops
// on its own.
func Run(ctx context.Context, o Options) error {
	o = o.withDefaults()
	d := &daemon{o: o, cfg: o.Config, log: o.Logger}
	defer d.close()
	if d.cfg.LogLevel != "" {
		_ = o.LogLevel.UnmarshalText([]byte(d.cfg.LogLevel)) // validated
	}
	for _, step := range []func(context.Context) error{
		d.listen,        // first: a bad address fails before anything is opened
		d.loadTLS,       // certificates, before anything is served
		d.openStore,     // bbolt or Vault
		d.openAuditLog,  // metrics and the audit trail
		d.loadKeySets,   // signer, JWKS, rotation manager; the first load
		d.buildBackups,  // backup.schedule, when set
		d.buildAPI,      // token services, auth, the HTTP servers
		d.listenMetrics, // metrics.listen, when set
	} {
		if err := step(ctx); err != nil {
			if d.ln != nil && o.Listener == nil {
				d.ln.Close()
			}
			return err
		}
	}
	return d.run(ctx)
}

func (d *daemon) close() {
	for i := len(d.closers) - 1; i >= 0; i-- {
		d.closers[i]()
	}
}

func (d *daemon) listen(context.Context) error {
	if d.o.Listener != nil {
		d.ln = d.o.Listener
		return nil
	}
	addr := d.cfg.Listen
	if d.o.Listen != "" {
		addr = d.o.Listen
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", addr, err)
	}
	d.ln = ln
	return nil
}

func (d *daemon) loadTLS(context.Context) error {
	if !d.cfg.TLS.On() {
		return nil
	}
	d.tlsSrv = &tlsconf.Server{}
	return d.tlsSrv.Load(d.cfg.TLS)
}

func (d *daemon) openStore(ctx context.Context) error {
	eng, err := openStore(ctx, d.cfg.Storage, d.o.Getenv, d.log)
	if err != nil {
		return err
	}
	store := eng.Store // the backend itself: its optional capabilities show
	d.engine, d.store = eng, store
	d.closers = append(d.closers, func() {
		if err := store.Close(); err != nil {
			d.log.Error("closing the store", "err", err)
		}
	})
	return d.openCustodies()
}

// loadKeySets builds the signer, the JWKS publisher and the rotation
// manager, and loads (or creates) the key sets before anything listens. A
// store that cannot be reached (Vault down) is retried in the background
// while /readyz says why; any other failure (a corrupt key set, a changed
// algorithm) is fatal.
func (d *daemon) loadKeySets(ctx context.Context) error {
	var obs signer.Observer
	var events []func(rotation.Event)
	if d.met != nil {
		obs, events = d.met, append(events, d.met.Event)
	}
	if d.auditLog != nil {
		events = append(events, auditRotation(d.auditLog))
	}
	for name, c := range d.custodies { // counted and watched for /readyz
		d.custodies[name] = custody.Watch(c, name, d.met.CustodyFailed)
	}
	d.sg = signer.New(d.o.Now, obs)
	d.pub = jwks.New()
	if err := d.pub.SetIssuer(d.cfg.IssuerURL); err != nil {
		return err
	}
	tokens, err := d.openTokenState(ctx)
	d.tokens = tokens
	if err != nil {
		return err
	}
	if err := d.openPublishers(ctx); err != nil {
		return err
	}
	var gate rotation.Gate
	if len(d.publishers) > 0 {
		gate = d.publishers.Held
	}
	ps, err := policies(d.cfg, d.custodies)
	if err != nil {
		return err
	}
	d.mgr = rotation.NewManager(rotation.Options{Gate: gate,
		Store: d.met.Store(d.store), Policies: ps, Generator: d.o.Generator, Now: d.o.Now,
		Logger: d.log, Listeners: []rotation.Listener{d.sg, d.pub}, Events: events,
		TokenState: tokens, Revocations: d.sg.Revocations(), Refused: d.met.KeyRefused, Rejected: d.met.TokenStateRejected,
	})
	d.met.WatchKeySets(d.mgr, d.o.Now)
	// The revocations watch (Redis) subscribes before the first load, so
	// that the load is its first resynchronisation (see WatchRevocations).
	watchCtx, stopWatch := context.WithCancel(ctx)
	watched := d.mgr.WatchRevocations(watchCtx)
	d.closers = append(d.closers, func() { stopWatch(); <-watched })
	startCtx, cancel := context.WithTimeout(ctx, StartTimeout)
	d.startErr = d.mgr.Start(startCtx)
	cancel()
	// A start that ran out of time while creating many key sets goes on in
	// the background like one waiting for the store: /readyz says
	// "starting" until it is done; what it made so far is in the store.
	if d.startErr != nil && !errors.Is(d.startErr, keystore.ErrUnavailable) && !errors.Is(d.startErr, context.DeadlineExceeded) {
		return d.startErr
	}
	if d.startErr == nil {
		d.loaded()
	}
	return nil
}

// loaded runs once the key sets and revocations are in memory: bbolt's
// pages read by the load leave keyd's RSS (they stay in the page cache),
// then the Loaded hook returns the load's garbage.
func (d *daemon) loaded() {
	d.releaseMapped("start")
	if d.o.Loaded != nil {
		d.o.Loaded()
	}
}

// releaseMapped drops from keyd's RSS the pages of the bbolt file that a
// whole read (the start, a backup) brought in: they stay in the page
// cache.
func (d *daemon) releaseMapped(after string) {
	if d.engine.Release != nil {
		if err := d.engine.Release(); err != nil {
			d.log.Warn("could not release the database file's pages read", "after", after, "err", err)
		}
	}
}

func (d *daemon) buildAPI(context.Context) error {
	cfg, log := d.cfg, d.log
	if len(cfg.Auth.Tokens) == 0 && len(cfg.Auth.Clients) == 0 {
		log.Warn("no API tokens or clients configured: only the JWKS and health endpoints can be used")
	} else if !hasAdmin(cfg.Auth) {
		log.Warn("no API token or client has the admin scope: keyd rotate, revoke, import-key and status cannot be used")
	}
	if d.stateRecords != nil {
		d.pairs = refresh.New(d.stateRecords, d.sg, d.o.Now, func(name string) (refresh.Settings, bool) {
			p, ok := d.mgr.Policy(name)
			return refresh.Settings{TTL: p.RefreshTTL}, ok
		})
	}
	auth := api.NewAuthenticator(cfg.Auth.Tokens, cfg.Auth.Clients...)
	d.guard = authguard.New(authguard.Options{Now: d.o.Now, Record: d.auditLog.Note,
		TrustedProxies: cfg.Auth.TrustedProxyPrefixes(), IPv4Prefix: cfg.Auth.IPv4Prefix, IPv6Prefix: cfg.Auth.IPv6Prefix})
	d.reload = &reloader{path: d.o.ConfigPath, log: log, level: d.o.LogLevel, auth: auth, tls: d.tlsSrv, mgr: d.mgr, custodies: d.custodies, pub: d.pub, audit: d.auditLog, cur: cfg}
	handler := api.New(api.Options{
		Signer: d.sg, JWKS: d.pub, Manager: d.mgr, Auth: auth, Logger: log,
		Health: d.health, TokenState: d.tokenStateHealth, Custodies: d.custodyHealth, Metrics: d.met, MetricsRoute: cfg.Metrics.Listen == "", Audit: d.auditLog,
		Reload: d.reload.Reload, Refresh: d.pairs, AuthGuard: d.guard, Backup: d.makeBackup, LastBackup: d.lastBackupFunc(),
	})
	srv := newServer(handler, log)
	if d.tlsSrv != nil {
		srv.TLSConfig, _ = d.tlsSrv.Config()
		d.ln = tls.NewListener(d.ln, srv.TLSConfig)
	} else if !isLoopback(d.ln.Addr()) {
		log.Warn("listening beyond loopback without TLS: API tokens and tokens cross the network in clear; set tls.cert_file and tls.key_file", "addr", d.ln.Addr().String())
	}
	d.apiSrv = srv
	return nil
}

func hasAdmin(a config.Auth) bool {
	for _, t := range a.Tokens {
		if slices.Contains(t.Scopes, config.ScopeAdmin) {
			return true
		}
	}
	for _, c := range a.Clients {
		if slices.Contains(c.Scopes, config.ScopeAdmin) {
			return true
		}
	}
	return false
}

func (d *daemon) listenMetrics(context.Context) error {
	if d.met == nil || d.cfg.Metrics.Listen == "" {
		return nil
	}
	mln, err := net.Listen("tcp", d.cfg.Metrics.Listen)
	if err != nil {
		return fmt.Errorf("metrics.listen on %s: %w", d.cfg.Metrics.Listen, err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", d.met.Handler())
	d.mln = mln
	d.metricsSrv = newServer(mux, d.log)
	return nil
}

// run serves the built daemon: the HTTP servers, the background work
// (finishing start-up, rotation, polling a shared store, pruning, the auth
// guard) and, once the key sets are loaded, the Kubernetes signer, until
// ctx is cancelled, a server stops, or the background work fails.
func (d *daemon) run(ctx context.Context) error {
	log, cfg := d.log, d.cfg
	scheme := "http"
	if d.tlsSrv != nil {
		scheme = "https"
	}
	// What needs the key sets loaded (the Kubernetes signer: kube-apiserver
	// waits for its socket at start, but exits at once when its first
	// FetchKeys finds no keys; the scheduler and pollers) waits for loaded:
	// closed now, or when the background start finishes.
	loaded := make(chan struct{})
	actors := []actor{serving("API server", d.apiSrv, d.ln), d.reloading()}
	if d.mln != nil {
		log.Info("metrics listening", "addr", d.mln.Addr().String())
		actors = append(actors, serving("metrics server", d.metricsSrv, d.mln))
	}
	if d.startErr == nil {
		close(loaded)
	} else {
		actors = append(actors, actor{name: "start", run: func(ctx context.Context) error {
			if err := d.finishStart(ctx); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				return err
			}
			close(loaded)
			return nil
		}})
	}
	if cfg.Kubernetes.Socket != "" {
		actors = append(actors, afterLoad(loaded, d.kubeSigner()))
	}
	tasks := []actor{
		task("scheduler", d.mgr.Run),
		task("auth guard", d.guard.Run),
		task("token state prune", func(ctx context.Context) { pruneTokenState(ctx, d.mgr, d.pairs, log) }),
		task("token state probe", d.probeTokenState),
	}
	if d.pairs != nil {
		tasks = append(tasks, task("orphan logins", d.pairs.ForgetOrphans))
	}
	if d.engine.Shared { // replicas share the store: poll for their changes
		tasks = append(tasks, task("store poll", func(ctx context.Context) { d.mgr.Poll(ctx, cfg.Storage.Vault.PollInterval) }))
	}
	for _, t := range tasks {
		actors = append(actors, afterLoad(loaded, t))
	}
	if d.backups != nil {
		actors = append(actors, afterLoad(loaded, actor{name: "scheduled backups", run: d.backups.Run}))
	}
	actors = append(actors, d.publisherActors(loaded)...)
	log.Info("keyd listening", "addr", d.ln.Addr().String(), "scheme", scheme, "keysets", d.mgr.Names(), "backend", cfg.Storage.Backend)
	err := runActors(ctx, actors)
	if err != nil {
		log.Error("fatal", "err", err)
		return err
	}
	log.Info("stopped")
	return nil
}

// finishStart waits, when the first load of the key sets did not finish,
// until it does (the store back, or the creation done).
func (d *daemon) finishStart(ctx context.Context) error {
	if errors.Is(d.startErr, context.DeadlineExceeded) {
		d.log.Info("still loading and creating key sets: not ready yet", "after", StartTimeout)
	} else {
		d.log.Error("key store unavailable at start: not ready; retrying", "err", d.startErr)
	}
	if err := retryStart(ctx, d.mgr, d.log); err != nil {
		return err
	}
	d.loaded()
	d.log.Info("key sets loaded: ready")
	return nil
}

// health is the manager's, and not started until every listener the
// config names is open: a /readyz of 200 means kube-apiserver can dial the
// Kubernetes signer's socket too.
func (d *daemon) health() (started bool, storeErr error) {
	started, storeErr = d.mgr.Health()
	if d.cfg.Kubernetes.Socket != "" && !d.kubeUp.Load() {
		started = false
	}
	return started, storeErr
}

// kubeSigner is the actor of the Kubernetes signer: it opens its socket
// and serves it until ctx ends.
func (d *daemon) kubeSigner() actor {
	return actor{name: "kubernetes signer", run: func(ctx context.Context) error {
		k := d.cfg.Kubernetes
		kube, err := kubesigner.Listen(kubesigner.Options{
			Socket: k.Socket, Group: k.Group, KeySet: k.KeySet, Signer: d.sg, Audit: d.auditLog, Logger: d.log, Now: d.o.Now,
			Policy: func() (keystore.Policy, bool) { return d.mgr.Policy(k.KeySet) },
			Ready:  func() bool { started, _ := d.mgr.Health(); return started },
		})
		if err != nil {
			return err
		}
		served := make(chan error, 1)
		go func() { served <- kube.Serve() }()
		d.kubeUp.Store(true)
		defer d.kubeUp.Store(false)
		d.log.Info("kubernetes external signer listening", "socket", k.Socket, "keyset", k.KeySet)
		select {
		case err := <-served:
			return fmt.Errorf("stopped: %w", err)
		case <-ctx.Done():
			kube.Stop()
			<-served
			return nil
		}
	}}
}

// pruneTokenState deletes, hourly, the revocations every token of which
// has expired and the refresh token families that expired.
func pruneTokenState(ctx context.Context, mgr *rotation.Manager, pairs *refresh.Service, log *slog.Logger) {
	wait.Every(ctx, time.Hour, func() {
		if n, err := mgr.PruneRevocations(ctx); err != nil && ctx.Err() == nil {
			log.Warn("pruning expired revocations failed; retrying in an hour", "err", err)
		} else if n > 0 {
			log.Info("pruned expired revocations", "count", n)
		}
		if pairs == nil {
			return
		}
		if n, err := pairs.Prune(ctx); err != nil && ctx.Err() == nil {
			log.Warn("pruning expired refresh token families failed; retrying in an hour", "err", err)
		} else if n > 0 {
			log.Info("pruned expired refresh token families", "count", n)
		}
	})
}

func isLoopback(a net.Addr) bool {
	tcp, ok := a.(*net.TCPAddr)
	return ok && tcp.IP.IsLoopback()
}

func newServer(h http.Handler, log *slog.Logger) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
}

// retryStart calls mgr.Start with exponential backoff while the store is
// unavailable. It returns ctx's error when cancelled first.
func retryStart(ctx context.Context, mgr *rotation.Manager, log *slog.Logger) error {
	backoff := time.Second
	for {
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		err := mgr.Start(ctx)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if !errors.Is(err, keystore.ErrUnavailable) {
			return err
		}
		backoff = min(2*backoff, 30*time.Second)
		log.Warn("key store still unavailable; retrying", "retry_in", backoff, "err", err)
	}
}
