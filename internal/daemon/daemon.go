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
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/keyd-dev/keyd/audit"
	"github.com/keyd-dev/keyd/backends/file"
	"github.com/keyd-dev/keyd/backends/vault"
	"github.com/keyd-dev/keyd/internal/api"
	"github.com/keyd-dev/keyd/internal/authguard"
	"github.com/keyd-dev/keyd/internal/config"
	"github.com/keyd-dev/keyd/internal/tlsconf"
	"github.com/keyd-dev/keyd/jwks"
	"github.com/keyd-dev/keyd/keystore"
	"github.com/keyd-dev/keyd/kubesigner"
	"github.com/keyd-dev/keyd/metrics"
	"github.com/keyd-dev/keyd/refresh"
	"github.com/keyd-dev/keyd/rotation"
	"github.com/keyd-dev/keyd/signer"
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
	Logger     *slog.Logger
	// LogLevel is the level of Logger's handler, which the config's
	// log_level sets at start and on reload; nil: not adjustable.
	LogLevel  *slog.LevelVar
	Generator keystore.Generator  // default keystore.GenerateMaterial
	Now       func() time.Time    // default time.Now
	Getenv    func(string) string // default os.Getenv
}

// Run serves until ctx is cancelled, then shuts down gracefully. It
// returns an error when start-up fails or the server stops on its own.
func Run(ctx context.Context, o Options) error {
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
	log := o.Logger
	cfg := o.Config
	if cfg.LogLevel != "" {
		_ = o.LogLevel.UnmarshalText([]byte(cfg.LogLevel)) // validated
	}
	listen := cfg.Listen
	if o.Listen != "" {
		listen = o.Listen
	}
	var tlsSrv *tlsconf.Server
	if cfg.TLS.On() {
		tlsSrv = &tlsconf.Server{}
		if err := tlsSrv.Load(cfg.TLS); err != nil {
			return err
		}
	}

	store, err := openStore(cfg.Storage, o.Getenv, log)
	if err != nil {
		return err
	}
	defer func() {
		if err := store.Close(); err != nil {
			log.Error("closing the store", "err", err)
		}
	}()

	var met *metrics.Metrics
	var obs signer.Observer
	var events []func(rotation.Event)
	if cfg.Metrics.On() {
		met = metrics.New()
		obs, events = met, append(events, met.Event)
	}
	auditLog, err := openAudit(cfg.Audit, met, log)
	if err != nil {
		return err
	}
	defer func() {
		if err := auditLog.Close(); err != nil {
			log.Error("closing the audit trail", "err", err)
		}
	}()
	if auditLog != nil {
		events = append(events, auditLog.RotationEvent)
		auditLog.Note(audit.Record{Event: audit.EventConfigLoaded, Detail: configDetail(o.ConfigPath, cfg)})
	}
	sg := signer.New(o.Now, obs)
	pub := jwks.New()
	if err := pub.SetIssuer(cfg.IssuerURL); err != nil {
		return err
	}
	mgr := rotation.NewManager(rotation.Options{
		Store: met.Store(store), Policies: cfg.Policies(), Generator: o.Generator, Now: o.Now,
		Logger: log, Listeners: []rotation.Listener{sg, pub}, Events: events,
	})
	met.WatchKeySets(mgr, o.Now)
	// Load the key sets before listening. A store that cannot be reached
	// (Vault down) is retried in the background while /readyz says why;
	// any other failure (a corrupt key set, a changed algorithm) is fatal.
	startCtx, cancelStart := context.WithTimeout(ctx, StartTimeout)
	startErr := mgr.Start(startCtx)
	cancelStart()
	// A start that ran out of time while creating many key sets goes on in
	// the background like one waiting for the store: /readyz says
	// "starting" until it is done; what it made so far is in the store.
	if startErr != nil && !errors.Is(startErr, keystore.ErrUnavailable) && !errors.Is(startErr, context.DeadlineExceeded) {
		return startErr
	}
	if len(cfg.Auth.Tokens) == 0 && len(cfg.Auth.Clients) == 0 {
		log.Warn("no API tokens or clients configured: only the JWKS and health endpoints can be used")
	}

	var pairs *refresh.Service
	if records, ok := store.(keystore.RecordStore); ok { // both backends are
		pairs = refresh.New(records, sg, o.Now, func(name string) (refresh.Settings, bool) {
			p, ok := mgr.Policy(name)
			return refresh.Settings{TTL: p.RefreshTTL}, ok
		})
	}
	auth := api.NewAuthenticator(cfg.Auth.Tokens, cfg.Auth.Clients...)
	guard := authguard.New(authguard.Options{Now: o.Now, Record: auditLog.Note})
	rl := &reloader{path: o.ConfigPath, log: log, level: o.LogLevel, auth: auth, tls: tlsSrv, mgr: mgr, pub: pub, audit: auditLog, cur: cfg}
	handler := api.New(api.Options{
		Signer: sg, JWKS: pub, Manager: mgr, Auth: auth, Logger: log,
		Health: mgr.Health, Metrics: met, MetricsRoute: cfg.Metrics.Listen == "", Audit: auditLog,
		Reload: rl.Reload, Refresh: pairs, AuthGuard: guard,
	})
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", listen, err)
	}
	srv := newServer(handler, log)
	scheme := "http"
	if tlsSrv != nil {
		scheme = "https"
		srv.TLSConfig, _ = tlsSrv.Config()
		ln = tls.NewListener(ln, srv.TLSConfig)
	} else if !isLoopback(ln.Addr()) {
		log.Warn("listening beyond loopback without TLS: API tokens and tokens cross the network in clear; set tls.cert_file and tls.key_file", "addr", ln.Addr().String())
	}
	servers := []*http.Server{srv}
	served := make(chan error, 3) // the API, metrics, the kubernetes signer
	if met != nil && cfg.Metrics.Listen != "" {
		mln, err := net.Listen("tcp", cfg.Metrics.Listen)
		if err != nil {
			ln.Close()
			return fmt.Errorf("metrics.listen on %s: %w", cfg.Metrics.Listen, err)
		}
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", met.Handler())
		msrv := newServer(mux, log)
		servers = append(servers, msrv)
		log.Info("metrics listening", "addr", mln.Addr().String())
		go func() { served <- msrv.Serve(mln) }()
	}
	if k := cfg.Kubernetes; k.Socket != "" {
		kube, err := kubesigner.Listen(kubesigner.Options{
			Socket: k.Socket, Group: k.Group, KeySet: k.KeySet, Signer: sg, Audit: auditLog, Logger: log, Now: o.Now,
			Policy: func() (keystore.Policy, bool) { return mgr.Policy(k.KeySet) },
			Ready:  func() bool { started, _ := mgr.Health(); return started },
		})
		if err != nil {
			ln.Close()
			return err
		}
		go func() { served <- kube.Serve() }()
		defer kube.Stop()
		log.Info("kubernetes external signer listening", "socket", k.Socket, "keyset", k.KeySet)
	}
	log.Info("keyd listening", "addr", ln.Addr().String(), "scheme", scheme, "keysets", mgr.Names(), "backend", cfg.Storage.Backend)

	// Background work (finishing start-up, the rotation scheduler and, for
	// a shared store, polling for other replicas' changes) stops with the
	// server, and a fatal error from it stops the server.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	fatal := make(chan error, 1)
	background := make(chan struct{})
	go func() {
		defer close(background)
		if startErr != nil {
			if errors.Is(startErr, context.DeadlineExceeded) {
				log.Info("still loading and creating key sets: not ready yet", "after", StartTimeout)
			} else {
				log.Error("key store unavailable at start: not ready; retrying", "err", startErr)
			}
			if err := retryStart(ctx, mgr, log); err != nil {
				if ctx.Err() == nil {
					fatal <- err
				}
				return
			}
			log.Info("key sets loaded: ready")
		}
		done := make(chan struct{})
		go func() {
			defer close(done)
			if cfg.Storage.Backend == "vault" {
				mgr.Poll(ctx, cfg.Storage.Vault.PollInterval)
			}
		}()
		pruned := make(chan struct{})
		go func() { defer close(pruned); prunePairs(ctx, pairs, log) }()
		guarded := make(chan struct{})
		go func() { defer close(guarded); guard.Run(ctx) }()
		mgr.Run(ctx)
		<-done
		<-pruned
		<-guarded
	}()
	defer func() { cancel(); <-background }() // before the store closes

	go func() { served <- srv.Serve(ln) }()
	var runErr error
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
wait:
	for {
		select {
		case err := <-served:
			return fmt.Errorf("http server stopped: %w", err)
		case runErr = <-fatal:
			log.Error("fatal", "err", runErr)
			break wait
		case <-hup:
			log.Info("SIGHUP: reloading the config and reopening the audit trail")
			auditLog.Reopen()
			_ = rl.Reload(ctx) // logs and audits the outcome itself
		case <-ctx.Done():
			break wait
		}
	}
	log.Info("shutting down")
	shutdownCtx, cancel := context.WithTimeout(context.Background(), ShutdownTimeout)
	defer cancel()
	for _, srv := range servers {
		if err := srv.Shutdown(shutdownCtx); err != nil {
			return fmt.Errorf("graceful shutdown: %w", err)
		}
		if err := <-served; !errors.Is(err, http.ErrServerClosed) {
			return err
		}
	}
	log.Info("stopped")
	return runErr
}

// prunePairs deletes expired refresh token families hourly.
func prunePairs(ctx context.Context, pairs *refresh.Service, log *slog.Logger) {
	if pairs == nil {
		return
	}
	t := time.NewTicker(time.Hour)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if n, err := pairs.Prune(ctx); err != nil && ctx.Err() == nil {
			log.Warn("pruning expired refresh token families failed; retrying in an hour", "err", err)
		} else if n > 0 {
			log.Info("pruned expired refresh token families", "count", n)
		}
	}
}

// openAudit opens the audit trail the config asks for, or returns nil.
func openAudit(ac config.Audit, met *metrics.Metrics, log *slog.Logger) (*audit.Log, error) {
	if ac.Path == "" {
		return nil, nil
	}
	o := audit.Options{
		Path: ac.Path, Required: ac.Required, Written: met.AuditWritten,
		Failed: func(err error) {
			met.AuditFailed()
			log.Error("audit records could not be written", "err", err, "required", ac.Required)
		},
	}
	if ac.KeyFile != "" {
		key, err := audit.ReadKeyFile(ac.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("audit.key_file: %w", err)
		}
		// The daemon's log is a second place holding the trail to its
		// checkpoints: records cut from the trail's end show against them.
		o.Key, o.Checkpoint = key, func(seq uint64, mac string) {
			log.Info("audit checkpoint", "seq", seq, "hmac", mac)
		}
	}
	l, err := audit.Open(o)
	if err != nil {
		return nil, err
	}
	log.Info("audit trail", "path", ac.Path, "required", ac.Required, "keyed", ac.KeyFile != "")
	return l, nil
}

// configDetail describes a loaded config for the audit trail: where it
// came from and what it serves, nothing secret.
func configDetail(path string, cfg *config.Config) string {
	if path == "" {
		path = "embedded default"
	}
	names := make([]string, len(cfg.KeySets))
	for i, ks := range cfg.KeySets {
		names[i] = ks.Name
	}
	return fmt.Sprintf("%s; keysets %s; %d API tokens; backend %s", path, strings.Join(names, ","), len(cfg.Auth.Tokens), cfg.Storage.Backend)
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

func openStore(sc config.Storage, getenv func(string) string, log *slog.Logger) (keystore.Store, error) {
	switch sc.Backend {
	case "file":
		key, err := loadMasterKey(sc.File, getenv)
		if err != nil {
			return nil, err
		}
		return file.Open(file.Options{Path: sc.File.Path, MasterKey: key})
	case "vault":
		v := sc.Vault
		o := vault.Options{
			Address: v.Address, Mount: v.Mount, Prefix: v.Prefix, Timeout: v.Timeout,
			CAFile: v.TLS.CAFile, SkipVerify: v.TLS.SkipVerify, Logger: log,
		}
		if v.Auth.Method == "approle" {
			o.RoleID, o.SecretIDFile, o.AppRoleMount = v.Auth.AppRole.RoleID, v.Auth.AppRole.SecretIDFile, v.Auth.AppRole.Mount
		}
		if v.TLS.SkipVerify {
			log.Warn("storage.vault.tls.skip_verify is set: Vault's certificate is not checked")
		}
		return vault.Open(o)
	}
	return nil, fmt.Errorf("storage.backend: %q is not supported", sc.Backend)
}

// loadMasterKey reads the master key from storage.file.master_key_file or
// KEYD_MASTER_KEY; exactly one must be set. A key file must not be readable
// by group or others.
func loadMasterKey(fc config.File, getenv func(string) string) ([]byte, error) {
	env := getenv(EnvMasterKey)
	switch {
	case fc.MasterKeyFile != "" && env != "":
		return nil, fmt.Errorf("master key: both %s and storage.file.master_key_file are set; keep one", EnvMasterKey)
	case env != "":
		key, err := file.ParseMasterKey(env)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", EnvMasterKey, err)
		}
		return key, nil
	case fc.MasterKeyFile != "":
		fi, err := os.Stat(fc.MasterKeyFile)
		if err != nil {
			return nil, fmt.Errorf("storage.file.master_key_file: %w", err)
		}
		if perm := fi.Mode().Perm(); perm&0o077 != 0 {
			return nil, fmt.Errorf("storage.file.master_key_file: %s has mode %04o, readable by others; run chmod 600 %s", fc.MasterKeyFile, perm, fc.MasterKeyFile)
		}
		raw, err := os.ReadFile(fc.MasterKeyFile)
		if err != nil {
			return nil, fmt.Errorf("storage.file.master_key_file: %w", err)
		}
		key, err := file.ParseMasterKey(string(raw))
		if err != nil {
			return nil, fmt.Errorf("storage.file.master_key_file %s: %w", fc.MasterKeyFile, err)
		}
		return key, nil
	}
	return nil, fmt.Errorf("missing master key: set %s (base64 of 32 random bytes, e.g. `head -c 32 /dev/urandom | base64`) or storage.file.master_key_file", EnvMasterKey)
}
