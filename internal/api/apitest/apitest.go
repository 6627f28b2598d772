// Package apitest serves keyd's API over loopback for tests, wired from
// real parts as the daemon wires them (a bbolt store in a temporary
// folder, the rotation manager, the signer, the JWKS publisher), with a
// clock the test moves and two callers: "svc-token" (sign:*, verify:*) and
// "ops-token" (admin).
package apitest

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyd-dev/keyd/audit"
	"github.com/keyd-dev/keyd/backends/file"
	"github.com/keyd-dev/keyd/internal/api"
	"github.com/keyd-dev/keyd/internal/authguard"
	"github.com/keyd-dev/keyd/internal/config"
	"github.com/keyd-dev/keyd/jwks"
	"github.com/keyd-dev/keyd/keystore"
	"github.com/keyd-dev/keyd/keystore/keystoretest"
	"github.com/keyd-dev/keyd/metrics"
	"github.com/keyd-dev/keyd/refresh"
	"github.com/keyd-dev/keyd/rotation"
	"github.com/keyd-dev/keyd/signer"
	"github.com/keyd-dev/keyd/tokenstate/records"
)

// Tokens of the two callers.
const (
	ServiceToken = "svc-token"
	AdminToken   = "ops-token"
)

// Server is a running API.
type Server struct {
	t       testing.TB
	URL     string
	Clock   *keystoretest.Clock
	Store   *file.Store
	Manager *rotation.Manager
	// NotReady makes the next that many readiness checks answer "not
	// loaded yet" (every endpoint but the health ones answers 503).
	NotReady atomic.Int32
}

// Serve starts the API for the key sets of policies on loopback; met, when
// not nil, counts everything and is served at /metrics.
func Serve(t testing.TB, met *metrics.Metrics, policies ...keystore.Policy) *Server {
	t.Helper()
	h, s := Handler(t, Options{Metrics: met}, policies...)
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	s.URL = srv.URL
	return s
}

// Options add optional parts to the API.
type Options struct {
	Metrics *metrics.Metrics // counts everything, served at /metrics
	Audit   *audit.Log       // records security events
	// AuthGuard limits failed authentications (nil: the API's default,
	// on the real clock).
	AuthGuard *authguard.Guard
}

// Handler wires the API as Serve does and returns its handler, for tests
// and benchmarks that call it without the network; the Server has no URL.
func Handler(t testing.TB, o Options, policies ...keystore.Policy) (http.Handler, *Server) {
	t.Helper()
	met := o.Metrics
	c := keystoretest.NewClock(time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC))
	store, err := file.Open(file.Options{Path: filepath.Join(t.TempDir(), "keyd.db"), MasterKey: make([]byte, 32)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	var obs signer.Observer
	var events []func(rotation.Event)
	if met != nil {
		obs, events = met, []func(rotation.Event){met.Event}
	}
	sg := signer.New(c.Now, obs)
	pub := jwks.New()
	mgr := rotation.NewManager(rotation.Options{
		Store: met.Store(store), Policies: policies, Generator: keystoretest.FastGenerator, Now: c.Now,
		Logger: slog.New(slog.DiscardHandler), Listeners: []rotation.Listener{sg, pub}, Events: events,
		TokenState: records.New(store), Revocations: sg.Revocations(),
	})
	if err := mgr.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	met.WatchKeySets(mgr, c.Now)
	auth := api.NewAuthenticator([]config.Token{
		{Name: "svc", SHA256: config.TokenHash(ServiceToken), Scopes: []string{"sign:*", "verify:*"}},
		{Name: "ops", SHA256: config.TokenHash(AdminToken), Scopes: []string{"admin"}},
	})
	s := &Server{t: t, Clock: c, Store: store, Manager: mgr}
	pairs := refresh.New(store, sg, c.Now, func(name string) (refresh.Settings, bool) {
		p, ok := mgr.Policy(name)
		return refresh.Settings{TTL: p.RefreshTTL}, ok
	})
	h := api.New(api.Options{
		Signer: sg, JWKS: pub, Manager: mgr, Auth: auth, Logger: slog.New(slog.DiscardHandler),
		Health: func() (bool, error) {
			if s.NotReady.Load() > 0 {
				s.NotReady.Add(-1)
				return false, nil
			}
			return mgr.Health()
		},
		Metrics: met, MetricsRoute: met != nil, Refresh: pairs, Audit: o.Audit, AuthGuard: o.AuthGuard,
	})
	return h, s
}

// Call sends a request with token as bearer ("" for none) and returns the
// status and body.
func (s *Server) Call(method, path, token, body string) (int, string) {
	s.t.Helper()
	req, err := http.NewRequest(method, s.URL+path, strings.NewReader(body))
	if err != nil {
		s.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(out)
}
