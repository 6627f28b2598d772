// Package vault stores key sets in HashiCorp Vault's KV v2 engine (or any
// server speaking its API, such as OpenBao), so that several keyd replicas
// share one store. Vault encrypts the data and replicates it; this package
// adds compare-and-swap writes on KV v2's version numbers.
//
// Each key set is one secret at <mount>/data/<prefix>/<name>. Every write
// passes check-and-set with the version it was based on (0 to create), so a
// write from a stale read fails with keystore.ErrConflict and is retried on
// fresh state. After each write the secret's metadata is set to
// cas_required and max_versions 1: Vault then refuses writes without
// check-and-set and keeps no old versions, so a destroyed key is gone from
// Vault too.
//
// Open does no network I/O: a background loop authenticates (token or
// AppRole, or Kubernetes with the pod's service account token), renews the token before it expires with the api package's
// lifetime watcher, and logs in again when renewal ends. Until Vault is
// reachable, operations fail with keystore.ErrUnavailable.
package vault

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	vault "github.com/hashicorp/vault/api"
	"github.com/hashicorp/vault/api/auth/approle"
	"github.com/hashicorp/vault/api/auth/kubernetes"

	"github.com/keyd-dev/keyd/internal/storecodec"
	"github.com/keyd-dev/keyd/internal/wait"
	"github.com/keyd-dev/keyd/keystore"
)

// Options configure Open.
type Options struct {
	Address string // Vault's address; empty: VAULT_ADDR
	Mount   string // KV v2 mount, e.g. "secret"
	Prefix  string // path prefix for key sets, e.g. "keyd"

	// Token auth: Token, or VAULT_TOKEN when empty. AppRole auth instead
	// when RoleID is set: the secret id is read from SecretIDFile.
	Token        string
	RoleID       string
	SecretIDFile string
	// AppRoleMount is the AppRole auth mount; default "approle".
	AppRoleMount string
	// Kubernetes auth instead when KubernetesRole is set: the pod's
	// service account token, read from KubernetesTokenFile at every login
	// (the kubelet rotates it), is exchanged for a Vault token.
	KubernetesRole      string
	KubernetesTokenFile string // default /var/run/secrets/kubernetes.io/serviceaccount/token
	KubernetesMount     string // default "kubernetes"

	CAFile     string // PEM CA bundle for Vault's TLS certificate
	SkipVerify bool   // never in production

	Timeout time.Duration // per request; default 10s
	Logger  *slog.Logger
}

// Store is a keystore.Store on Vault KV v2.
type Store struct {
	client *vault.Client
	kv     *vault.KVv2
	mount  string
	prefix string
	log    *slog.Logger

	cancel context.CancelFunc
	done   chan struct{}

	mu       sync.Mutex
	authErr  error         // last authentication failure, nil once logged in
	loggedIn chan struct{} // closed at the first login that succeeded
	loginOK  sync.Once
}

var _ keystore.Store = (*Store)(nil)

// Open makes a client and starts authenticating in the background.
func Open(o Options) (*Store, error) {
	cfg := vault.DefaultConfig() // reads VAULT_ADDR and friends
	if cfg.Error != nil {
		return nil, fmt.Errorf("vault client config: %w", cfg.Error)
	}
	// The api package would turn TLS verification off on VAULT_SKIP_VERIFY
	// alone: an environment variable left over from a debugging session
	// must not silently expose keyd's keys to whoever sits between it and
	// Vault. Only the config (storage.vault.tls.skip_verify, logged) may.
	if skip, _ := strconv.ParseBool(os.Getenv(vault.EnvVaultSkipVerify)); skip && !o.SkipVerify {
		return nil, fmt.Errorf("%s is set in keyd's environment: keyd does not skip Vault's TLS verification because of it; unset it (or, if you mean it, set storage.vault.tls.skip_verify: true, which keyd logs)", vault.EnvVaultSkipVerify)
	}
	if o.Address != "" {
		cfg.Address = o.Address
	}
	cfg.Timeout = o.Timeout
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	// Keep a connection per concurrent request alive (the api package's
	// default keeps a few): a key set in Transit signs every token through
	// this client, and a new connection per request costs both sides.
	if tr, ok := cfg.HttpClient.Transport.(*http.Transport); ok {
		tr.MaxIdleConnsPerHost, tr.MaxIdleConns = 256, 256
	}
	if o.CAFile != "" || o.SkipVerify {
		if err := cfg.ConfigureTLS(&vault.TLSConfig{CACert: o.CAFile, Insecure: o.SkipVerify}); err != nil {
			return nil, fmt.Errorf("vault TLS: %w", err)
		}
	}
	client, err := vault.NewClient(cfg)
	if err != nil {
		return nil, fmt.Errorf("vault client: %w", err)
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if u, err := url.Parse(cfg.Address); err == nil && u.Scheme == "http" && !loopback(u.Hostname()) {
		o.Logger.Warn("Vault is reached over plain http beyond loopback: keyd's Vault token and every key cross the network in clear; use https", "address", cfg.Address)
	}
	s := &Store{
		client: client, kv: client.KVv2(o.Mount), mount: strings.Trim(o.Mount, "/"),
		prefix: strings.Trim(o.Prefix, "/"), log: o.Logger, done: make(chan struct{}),
		loggedIn: make(chan struct{}),
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel

	var login func(context.Context) (*vault.Secret, error)
	relogin := o.RoleID != "" || o.KubernetesRole != ""
	if o.KubernetesRole != "" {
		opts := []kubernetes.LoginOption{kubernetes.WithMountPath(cmp.Or(o.KubernetesMount, "kubernetes"))}
		if o.KubernetesTokenFile != "" {
			opts = append(opts, kubernetes.WithServiceAccountTokenPath(o.KubernetesTokenFile))
		}
		auth, err := kubernetes.NewKubernetesAuth(o.KubernetesRole, opts...)
		if err != nil {
			cancel()
			return nil, fmt.Errorf("vault Kubernetes auth: %w", err)
		}
		login = func(ctx context.Context) (*vault.Secret, error) { return client.Auth().Login(ctx, auth) }
		s.authErr = errors.New("not logged in to Vault yet")
	} else if o.RoleID != "" {
		mount := o.AppRoleMount
		if mount == "" {
			mount = "approle"
		}
		auth, err := approle.NewAppRoleAuth(o.RoleID, &approle.SecretID{FromFile: o.SecretIDFile}, approle.WithMountPath(mount))
		if err != nil {
			cancel()
			return nil, fmt.Errorf("vault AppRole: %w", err)
		}
		login = func(ctx context.Context) (*vault.Secret, error) { return client.Auth().Login(ctx, auth) }
		s.authErr = errors.New("not logged in to Vault yet")
	} else {
		if o.Token != "" {
			client.SetToken(o.Token)
		}
		if client.Token() == "" {
			cancel()
			return nil, errors.New("vault: no token (set VAULT_TOKEN, or configure AppRole or Kubernetes auth)")
		}
		login = s.lookupSelf
		s.loginOK.Do(func() { close(s.loggedIn) }) // the token is there; requests say whether it is good
	}
	go s.maintainAuth(ctx, login, relogin)
	return s, nil
}

// Client is the store's Vault client, logged in and renewed by the store,
// for other engines that share its connection (the Transit custody).
func (s *Store) Client() *vault.Client { return s.client }

// lookupSelf turns the static token into a secret the lifetime watcher can
// renew.
func (s *Store) lookupSelf(ctx context.Context) (*vault.Secret, error) {
	self, err := s.client.Auth().Token().LookupSelfWithContext(ctx)
	if err != nil {
		return nil, err
	}
	renewable, _ := self.TokenIsRenewable()
	ttl, _ := self.TokenTTL()
	return &vault.Secret{Auth: &vault.SecretAuth{ClientToken: s.client.Token(), Renewable: renewable, LeaseDuration: int(ttl.Seconds())}}, nil
}

// maintainAuth logs in (or checks the token), keeps the token renewed, and
// logs in again when renewal ends, backing off on failures.
func (s *Store) maintainAuth(ctx context.Context, login func(context.Context) (*vault.Secret, error), canRelogin bool) {
	defer close(s.done)
	backoff := time.Second
	for {
		secret, err := login(ctx)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			// A static token that Vault could not be asked about (a
			// timeout, Vault down) may well be fine: requests say for
			// themselves whether Vault answers. Only an answer (a bad
			// token), or a failed login, stops them here.
			var answered *vault.ResponseError
			if canRelogin || errors.As(err, &answered) {
				s.setAuthErr(fmt.Errorf("vault login: %w", err))
			}
			s.log.Warn("vault authentication failed; retrying", "retry_in", backoff, "err", err)
			if !wait.Sleep(ctx, backoff) {
				return
			}
			backoff = min(2*backoff, time.Minute)
			continue
		}
		s.setAuthErr(nil)
		backoff = time.Second
		if secret == nil || secret.Auth == nil || !secret.Auth.Renewable {
			if !canRelogin || secret == nil || secret.Auth == nil || secret.Auth.LeaseDuration == 0 {
				<-ctx.Done() // a token that never expires, or one we cannot replace
				return
			}
			// A non-renewable AppRole token: log in again shortly before it ends.
			if !wait.Sleep(ctx, time.Duration(secret.Auth.LeaseDuration)*time.Second*4/5) {
				return
			}
			continue
		}
		watcher, err := s.client.NewLifetimeWatcher(&vault.LifetimeWatcherInput{Secret: secret})
		if err != nil {
			s.log.Error("vault token renewal cannot start", "err", err)
			<-ctx.Done()
			return
		}
		go watcher.Start()
		stop := false
	watch:
		for {
			select {
			case <-ctx.Done():
				stop = true
				break watch
			case err := <-watcher.DoneCh():
				if err != nil {
					s.log.Warn("vault token renewal stopped", "err", err)
				}
				break watch
			case <-watcher.RenewCh():
				s.log.Debug("vault token renewed")
			}
		}
		watcher.Stop()
		if stop {
			return
		}
		if !canRelogin {
			s.setAuthErr(errors.New("the Vault token can no longer be renewed; give keyd a new token"))
			s.log.Error("the Vault token can no longer be renewed and token auth cannot log in again")
			<-ctx.Done()
			return
		}
	}
}

func (s *Store) setAuthErr(err error) {
	s.mu.Lock()
	s.authErr = err
	s.mu.Unlock()
	if err == nil {
		s.loginOK.Do(func() { close(s.loggedIn) })
	}
}

// LoggedIn waits for the first login (AppRole, Kubernetes auth) to
// succeed, or for ctx to end: then it returns the last login failure. With
// a token, it returns at once.
func (s *Store) LoggedIn(ctx context.Context) error {
	select {
	case <-s.loggedIn:
		return nil
	case <-ctx.Done():
		if err := s.ready(); err != nil {
			return err
		}
		return fmt.Errorf("not logged in to Vault: %w", ctx.Err())
	}
}

func (s *Store) ready() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.authErr != nil {
		return fmt.Errorf("%w: %w", keystore.ErrUnavailable, s.authErr)
	}
	return nil
}

// Close stops the authentication loop. It does not revoke the token.
func (s *Store) Close() error {
	s.cancel()
	<-s.done
	return nil
}

func (s *Store) path(name string) string { return s.prefix + "/" + name }

// Get implements keystore.Store.
func (s *Store) Get(ctx context.Context, name string) (*keystore.KeySet, error) {
	if err := s.ready(); err != nil {
		return nil, err
	}
	sec, err := s.kv.Get(ctx, s.path(name))
	if errors.Is(err, vault.ErrSecretNotFound) || (err == nil && sec.Data == nil) {
		return nil, fmt.Errorf("%w: %s", keystore.ErrNotFound, name)
	}
	if err != nil {
		return nil, s.wrap(err)
	}
	raw, err := json.Marshal(sec.Data)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", keystore.ErrCorrupt, err)
	}
	r, err := storecodec.Unmarshal(raw)
	if err != nil {
		return nil, err
	}
	ks, err := r.Decode(storecodec.Plain)
	if err != nil {
		return nil, err
	}
	if ks.Name != name {
		return nil, fmt.Errorf("%w: secret %s holds key set %q", keystore.ErrCorrupt, s.path(name), ks.Name)
	}
	ks.Version = uint64(sec.VersionMetadata.Version)
	return ks, nil
}

// List implements keystore.Store.
func (s *Store) List(ctx context.Context) ([]*keystore.KeySet, error) {
	if err := s.ready(); err != nil {
		return nil, err
	}
	sec, err := s.client.Logical().ListWithContext(ctx, s.mount+"/metadata/"+s.prefix)
	if err != nil {
		return nil, s.wrap(err)
	}
	var names []string
	if sec != nil {
		if keys, ok := sec.Data["keys"].([]any); ok {
			for _, k := range keys {
				if name, ok := k.(string); ok && !strings.HasSuffix(name, "/") {
					names = append(names, name)
				}
			}
		}
	}
	slices.Sort(names)
	var out []*keystore.KeySet
	for _, name := range names {
		ks, err := s.Get(ctx, name)
		if errors.Is(err, keystore.ErrNotFound) { // deleted meanwhile
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, ks)
	}
	return out, nil
}

// Put implements keystore.Store with KV v2 check-and-set.
func (s *Store) Put(ctx context.Context, ks *keystore.KeySet) (*keystore.KeySet, error) {
	if err := ks.Check(); err != nil {
		return nil, err
	}
	if err := s.ready(); err != nil {
		return nil, err
	}
	out := ks.Clone()
	r, err := storecodec.Encode(ks, storecodec.Plain)
	if err != nil {
		return nil, err
	}
	r.Version = 0 // Vault keeps the version in its metadata
	raw, err := json.Marshal(r)
	if err != nil {
		return nil, err
	}
	var data map[string]any
	if err := json.Unmarshal(raw, &data); err != nil {
		return nil, err
	}
	sec, err := s.kv.Put(ctx, s.path(ks.Name), data, vault.WithCheckAndSet(int(ks.Version)))
	if err != nil {
		if isCASMismatch(err) {
			return nil, fmt.Errorf("%w: %s changed since version %d", keystore.ErrConflict, ks.Name, ks.Version)
		}
		return nil, s.wrap(err)
	}
	out.Version = uint64(sec.VersionMetadata.Version)
	// Keep no old versions (destroyed keys are gone) and refuse writes
	// without check-and-set from anyone. Set after every write (writes are
	// rare: creation, rotations, revocations), so a failure here, which
	// loses nothing, mends itself at the next write; it is logged.
	if err := s.kv.PutMetadata(ctx, s.path(ks.Name), vault.KVMetadataPutInput{CASRequired: true, MaxVersions: 1}); err != nil {
		s.log.Warn("could not set cas_required and max_versions on the key set's Vault metadata", "keyset", ks.Name, "err", err)
	}
	return out, nil
}

// isCASMismatch recognises Vault's answer to a stale check-and-set.
func isCASMismatch(err error) bool {
	var re *vault.ResponseError
	if !errors.As(err, &re) || re.StatusCode != http.StatusBadRequest {
		return false
	}
	for _, e := range re.Errors {
		if strings.Contains(e, "check-and-set") {
			return true
		}
	}
	return false
}

// wrap marks Vault faults as ErrUnavailable, keeping Vault's reason (it
// never contains key material: keyd only sends material in write bodies,
// which Vault does not echo).
func (s *Store) wrap(err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%w: %w", keystore.ErrUnavailable, err)
	}
	var re *vault.ResponseError
	if errors.As(err, &re) {
		return fmt.Errorf("%w: vault answered %d: %s", keystore.ErrUnavailable, re.StatusCode, strings.Join(re.Errors, "; "))
	}
	return fmt.Errorf("%w: %w", keystore.ErrUnavailable, err)
}

// loopback reports whether host names this machine.
func loopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
