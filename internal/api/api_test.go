package api_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	josejwt "github.com/go-jose/go-jose/v4/jwt"

	"github.com/keyd-dev/keyd/audit"
	"github.com/keyd-dev/keyd/internal/api"
	"github.com/keyd-dev/keyd/internal/api/apitest"
	"github.com/keyd-dev/keyd/internal/config"
	"github.com/keyd-dev/keyd/keystore"
	"github.com/keyd-dev/keyd/metrics"
)

func TestScopes(t *testing.T) {
	a := api.NewAuthenticator([]config.Token{
		{Name: "svc", SHA256: config.TokenHash("svc-token"), Scopes: []string{"sign:*", "verify:billing"}},
		{Name: "ops", SHA256: config.TokenHash("ops-token"), Scopes: []string{"admin"}},
	})
	for _, h := range []string{"", "svc-token", "Bearer", "Bearer ", "Basic svc-token", "Bearer svc-token2"} {
		if _, ok := a.Authenticate(h); ok {
			t.Errorf("Authenticate(%q) accepted", h)
		}
	}
	p, ok := a.Authenticate("Bearer svc-token")
	if !ok || p.Name != "svc" {
		t.Fatalf("svc token: %v %v", p, ok)
	}
	for scope, want := range map[string]bool{"sign:a": true, "sign:billing": true, "verify:billing": true, "verify:a": false, "admin": false} {
		if p.Can(scope) != want {
			t.Errorf("svc Can(%s) = %v", scope, !want)
		}
	}
	if p, ok := a.Authenticate("bearer ops-token"); !ok || !p.Can("admin") || p.Can("sign:a") {
		t.Fatalf("ops token: admin must not imply signing")
	}
}

func newHandler(tb testing.TB, alg keystore.Algorithm) http.Handler {
	return newHandlerAudited(tb, alg, nil, nil)
}

// newHandlerAudited serves one key set called bench through the API's
// handler, without the network.
func newHandlerAudited(tb testing.TB, alg keystore.Algorithm, met *metrics.Metrics, log *audit.Log) http.Handler {
	tb.Helper()
	h, _ := apitest.Handler(tb, apitest.Options{Metrics: met, Audit: log},
		keystore.Policy{Name: "bench", Algorithm: alg, Rotation: "@daily", TokenTTL: 15 * time.Minute, JWKSMaxAge: 5 * time.Minute, Leeway: time.Minute})
	return h
}

// BenchmarkSignHandler measures a sign request through the whole HTTP
// handler (auth, decoding, signing, encoding), without the network.
func BenchmarkSignHandler(b *testing.B) {
	for _, bc := range []struct {
		alg     keystore.Algorithm
		metrics bool
	}{{keystore.HS256, false}, {keystore.HS256, true}, {keystore.RS256, true}, {keystore.ES256, false}, {keystore.ES256, true}, {keystore.EdDSA, true}} {
		name := string(bc.alg) + "/metrics=off"
		if bc.metrics {
			name = string(bc.alg) + "/metrics=on"
		}
		b.Run(name, func(b *testing.B) {
			var met *metrics.Metrics // one registry per run: b.Run calls this again for each b.N
			if bc.metrics {
				met = metrics.New()
			}
			benchSign(b, newHandlerAudited(b, bc.alg, met, nil))
		})
	}
}

// benchSign sends sign requests to h from parallel goroutines.
func benchSign(b *testing.B, h http.Handler) {
	body := `{"claims": {"sub": "alice", "aud": "billing"}, "ttl": "5m"}`
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			req := httptest.NewRequest("POST", "/v1/keysets/bench/sign", strings.NewReader(body))
			req.Header.Set("Authorization", "Bearer svc-token")
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != 200 {
				b.Fatalf("status %d: %s", rec.Code, rec.Body)
			}
		}
	})
}

// BenchmarkSignHandlerAudit measures signing with the audit trail off, on
// (written in the background) and required (each token waits for its
// record's group-committed fsync), with 32 concurrent signers as a loaded
// service would have.
func BenchmarkSignHandlerAudit(b *testing.B) {
	for _, mode := range []string{"off", "on", "required"} {
		b.Run("ES256/audit="+mode, func(b *testing.B) {
			var batches atomic.Int64
			defer func() { b.ReportMetric(float64(b.N)/max(1, float64(batches.Load())), "records/batch") }()
			var log *audit.Log
			if mode != "off" {
				var err error
				log, err = audit.Open(audit.Options{Path: filepath.Join(b.TempDir(), "audit.log"), Required: mode == "required", Written: func(int, time.Duration) { batches.Add(1) }})
				if err != nil {
					b.Fatal(err)
				}
				defer log.Close()
			}
			b.SetParallelism(64)
			benchSign(b, newHandlerAudited(b, keystore.ES256, nil, log))
		})
	}
}

func TestSignHandlerLeavesNoSecretInErrors(t *testing.T) {
	h := newHandler(t, keystore.HS256)
	req := httptest.NewRequest("POST", "/v1/keysets/bench/sign", strings.NewReader(`{"claims": {"exp": "x"}}`))
	req.Header.Set("Authorization", "Bearer svc-token")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != 400 || !strings.Contains(rec.Body.String(), "NumericDate") || rec.Header().Get("Content-Type") != "application/json" {
		t.Fatalf("bad exp: %d %s", rec.Code, rec.Body)
	}
}

func call(t testing.TB, h http.Handler, method, path, token, body string) (int, []byte) {
	t.Helper()
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec.Code, rec.Body.Bytes()
}

func TestSignBatch(t *testing.T) {
	h := newHandler(t, keystore.ES256)
	_, raw := call(t, h, "GET", "/v1/keysets/bench/jwks.json", "", "")
	var jwks jose.JSONWebKeySet
	if err := json.Unmarshal(raw, &jwks); err != nil {
		t.Fatal(err)
	}
	code, body := call(t, h, "POST", "/v1/keysets/bench/sign-batch", "svc-token", `{"items": [
		{"claims": {"sub": "a"}},
		{"claims": {"sub": "b"}, "ttl": "soon"},
		{"claims": {"sub": "c"}, "ttl": "1h"},
		{"claims": {"sub": "d"}, "ttl": "1m"}]}`)
	if code != 200 {
		t.Fatalf("batch: %d %s", code, body)
	}
	var out struct {
		Results []struct {
			Token string `json:"token"`
			KID   string `json:"kid"`
			Error *struct{ Code, Message string }
		} `json:"results"`
	}
	if err := json.Unmarshal(body, &out); err != nil || len(out.Results) != 4 {
		t.Fatalf("batch answer %s: %v", body, err)
	}
	for i, sub := range []string{"a", "", "", "d"} {
		res := out.Results[i]
		if sub == "" {
			if res.Error == nil || res.Error.Code != "bad_request" || res.Token != "" {
				t.Errorf("item %d: want its own bad_request, got %+v", i, res)
			}
			continue
		}
		if res.Error != nil || res.KID != out.Results[0].KID {
			t.Fatalf("item %d: %+v", i, res)
		}
		parsed, err := josejwt.ParseSigned(res.Token, []jose.SignatureAlgorithm{jose.ES256})
		if err != nil {
			t.Fatal(err)
		}
		var claims josejwt.Claims
		if err := parsed.Claims(jwks.Key(res.KID)[0].Key, &claims); err != nil || claims.Subject != sub {
			t.Fatalf("item %d: go-jose: %v, sub %q", i, err, claims.Subject)
		}
	}
	if !strings.Contains(string(body), "soon") || !strings.Contains(string(body), "token_ttl") {
		t.Errorf("item errors do not say what is wrong: %s", body)
	}

	items := strings.Repeat(`{"claims":{}},`, api.MaxBatchItems)
	code, body = call(t, h, "POST", "/v1/keysets/bench/sign-batch", "svc-token", `{"items":[`+items+`{"claims":{}}]}`)
	if code != 400 || !strings.Contains(string(body), "1000") {
		t.Fatalf("oversized batch: %d %s", code, body)
	}
	for _, bad := range []string{`{}`, `{"items": []}`, `{"items": {}}`, `{"items": [{"claims": 1}]}`} {
		if code, body := call(t, h, "POST", "/v1/keysets/bench/sign-batch", "svc-token", bad); code != 400 {
			t.Errorf("%s: %d %s", bad, code, body)
		}
	}
	if code, _ := call(t, h, "POST", "/v1/keysets/nope/sign-batch", "svc-token", `{"items":[{}]}`); code != 404 {
		t.Errorf("unknown key set: %d", code)
	}
	if code, _ := call(t, h, "POST", "/v1/keysets/bench/sign-batch", "", `{"items":[{}]}`); code != 401 {
		t.Errorf("no token: %d", code)
	}
}

// TestSignHandlerAllocations bounds what one sign request allocates in the
// handler, the request's own construction (httptest) included, so that a
// change that makes the hot path allocate more fails here.
func TestSignHandlerAllocations(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are meaningless under the race detector")
	}
	h := newHandler(t, keystore.HS256)
	body := `{"claims": {"sub": "alice", "aud": "billing"}, "ttl": "5m"}`
	got := testing.AllocsPerRun(200, func() {
		if code, out := call(t, h, "POST", "/v1/keysets/bench/sign", "svc-token", body); code != 200 {
			t.Fatalf("%d %s", code, out)
		}
	})
	const max = 59
	t.Logf("%v allocations per sign request", got)
	if got > max {
		t.Errorf("%v allocations per sign request, want at most %d", got, max)
	}
}

// TestMuxAnswers checks the answers no route gives: the mux's 404 and 405
// in keyd's JSON error format, its redirect to a cleaned path as it is,
// and a route's own 404 (an unknown key set) left alone.
func TestMuxAnswers(t *testing.T) {
	h := newHandler(t, keystore.HS256)
	for _, c := range []struct {
		method, path string
		status       int
		want         string
	}{
		{"GET", "/nope", 404, `"code":"not_found"`},
		{"DELETE", "/v1/keysets/bench/sign", 405, `"code":"method_not_allowed"`},
		{"GET", "/v1//keysets", 307, ``},
		{"GET", "/v1/keysets/nope/jwks.json", 404, `"code":"keyset_not_found"`},
	} {
		req := httptest.NewRequest(c.method, c.path, nil)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != c.status || !strings.Contains(rec.Body.String(), c.want) {
			t.Errorf("%s %s: %d %s, want %d with %s", c.method, c.path, rec.Code, rec.Body, c.status, c.want)
		}
		if c.status == 307 && rec.Header().Get("Location") != "/v1/keysets" {
			t.Errorf("redirect to %q", rec.Header().Get("Location"))
		}
		if c.want != "" && rec.Header().Get("Content-Type") != "application/json" {
			t.Errorf("%s %s: Content-Type %q", c.method, c.path, rec.Header().Get("Content-Type"))
		}
	}
}

// /readyz is public: it gives the class of a store failure to anyone and
// the store's own words (addresses, paths) only to admin callers.
func TestReadyzDetailOnlyForAdmins(t *testing.T) {
	storeErr := fmt.Errorf("%w: vault: dial tcp 10.9.8.7:8200: connect: connection refused", keystore.ErrUnavailable)
	h := api.New(api.Options{
		Auth: api.NewAuthenticator([]config.Token{
			{Name: "svc", SHA256: config.TokenHash("svc-token"), Scopes: []string{"sign:*"}},
			{Name: "ops", SHA256: config.TokenHash("ops-token"), Scopes: []string{"admin"}},
		}),
		Health: func() (bool, error) { return true, storeErr },
	})
	for token, wantDetail := range map[string]bool{"": false, "svc-token": false, "nope": false, "ops-token": true} {
		req := httptest.NewRequest("GET", "/readyz", nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		body := rec.Body.String()
		if rec.Code != 200 || !strings.Contains(body, `"status":"degraded"`) || !strings.Contains(body, "cannot be reached") {
			t.Errorf("token %q: %d %s", token, rec.Code, body)
		}
		if strings.Contains(body, "10.9.8.7") != wantDetail {
			t.Errorf("token %q: store detail shown %v, want %v: %s", token, !wantDetail, wantDetail, body)
		}
	}
}

// claims that are not a JSON object are refused in words.
func TestClaimsNotAnObject(t *testing.T) {
	h := newHandler(t, keystore.HS256)
	for _, body := range []string{`{"claims": ["sub"]}`, `{"claims": "alice"}`, `{"claims": 7}`} {
		code, out := call(t, h, "POST", "/v1/keysets/bench/sign", "svc-token", body)
		if code != 400 || !strings.Contains(string(out), "claims must be a JSON object of claims") {
			t.Errorf("%s: %d %s", body, code, out)
		}
	}
}

// While keyd is starting, /readyz answers 503 to every probe: that is its
// answer, logged at debug, not a warning per probe; other endpoints' 503s
// (not loaded yet) are still warnings.
func TestReadyzNotReadyIsNoWarning(t *testing.T) {
	var logs bytes.Buffer
	h := api.New(api.Options{
		Health: func() (bool, error) { return false, nil },
		Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	for range 3 {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", "/readyz", nil))
		if rec.Code != 503 {
			t.Fatalf("/readyz while starting: %d", rec.Code)
		}
	}
	if logs.Len() != 0 {
		t.Fatalf("/readyz's 503s were logged: %s", logs.String())
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/v1/keysets", nil))
	if rec.Code != 503 || !strings.Contains(logs.String(), "level=WARN") {
		t.Fatalf("another endpoint's %d while starting was not a warning: %q", rec.Code, logs.String())
	}
}

// BenchmarkVerifyHandler measures a verify request through the whole HTTP
// handler (auth, decoding, verification, the claims encoded back), without
// the network, on one goroutine: the figure beside BenchmarkVerifiers'.
func BenchmarkVerifyHandler(b *testing.B) {
	for _, alg := range []keystore.Algorithm{keystore.HS256, keystore.ES256} {
		b.Run(string(alg), func(b *testing.B) {
			h := newHandlerAudited(b, alg, metrics.New(), nil)
			call := func(path, body string) *httptest.ResponseRecorder {
				req := httptest.NewRequest("POST", path, strings.NewReader(body))
				req.Header.Set("Authorization", "Bearer svc-token")
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, req)
				return rec
			}
			signed := call("/v1/keysets/bench/sign", `{"claims": {"sub": "alice", "aud": "billing"}}`)
			var tok struct{ Token string }
			if err := json.Unmarshal(signed.Body.Bytes(), &tok); err != nil {
				b.Fatal(err)
			}
			body := `{"token":"` + tok.Token + `"}`
			b.ReportAllocs()
			for b.Loop() {
				if rec := call("/v1/keysets/bench/verify", body); rec.Code != 200 || !strings.Contains(rec.Body.String(), `"valid":true`) {
					b.Fatalf("%d %s", rec.Code, rec.Body)
				}
			}
		})
	}
}
