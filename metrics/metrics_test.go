package metrics_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	josejwt "github.com/go-jose/go-jose/v4/jwt"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/keyd-dev/keyd/internal/api/apitest"
	"github.com/keyd-dev/keyd/keystore"
	"github.com/keyd-dev/keyd/metrics"
	"github.com/keyd-dev/keyd/signer"
)

type fixture struct {
	*apitest.Server
	t *testing.T
}

// newFixture serves the real parts, wired as the daemon wires them, with
// metrics on, on loopback.
func newFixture(t *testing.T) *fixture {
	t.Helper()
	p := keystore.Policy{Name: "hs", Algorithm: keystore.HS256, Rotation: "@daily", TokenTTL: 10 * time.Minute, JWKSMaxAge: time.Minute, Leeway: 30 * time.Second}
	m := metrics.New()
	m.PublishTargets([]string{"bucket"}, time.Now()) // as the daemon does with publish[] set
	return &fixture{Server: apitest.Serve(t, m, p), t: t}
}

func (f *fixture) call(method, path, token, body string) (int, []byte) {
	f.t.Helper()
	code, out := f.Call(method, path, token, body)
	return code, []byte(out)
}

func (f *fixture) sign(claims string, ttl string) string {
	f.t.Helper()
	code, body := f.call("POST", "/v1/keysets/hs/sign", "svc-token", `{"claims":`+claims+`,"ttl":"`+ttl+`"}`)
	if code != 200 {
		f.t.Fatalf("sign: %d %s", code, body)
	}
	var out struct{ Token string }
	_ = json.Unmarshal(body, &out)
	return out.Token
}

func (f *fixture) verify(token, wantCode string) { f.t.Helper(); f.verifyWith(token, "", wantCode) }

// verifyWith verifies with extra request fields (`,"issuer":"x"`).
func (f *fixture) verifyWith(token, extra, wantCode string) {
	f.t.Helper()
	code, body := f.call("POST", "/v1/keysets/hs/verify", "svc-token", `{"token":"`+token+`"`+extra+`}`)
	var out struct {
		Valid bool
		Code  string
	}
	_ = json.Unmarshal(body, &out)
	if code != 200 || out.Valid != (wantCode == "") || out.Code != wantCode {
		f.t.Fatalf("verify: %d %s, want code %q", code, body, wantCode)
	}
}

// scrape reads /metrics with Prometheus' own text parser.
func (f *fixture) scrape() map[string]*dto.MetricFamily {
	f.t.Helper()
	code, body := f.call("GET", "/metrics", "", "")
	if code != 200 {
		f.t.Fatalf("/metrics: %d", code)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(string(body)))
	if err != nil {
		f.t.Fatalf("/metrics does not parse: %v\n%s", err, body)
	}
	return fams
}

// value returns the sample of family name whose labels include want (0 if
// absent).
func value(fams map[string]*dto.MetricFamily, name string, want map[string]string) float64 {
	fam, ok := fams[name]
	if !ok {
		return 0
	}
next:
	for _, m := range fam.GetMetric() {
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		for k, v := range want {
			if labels[k] != v {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.GetCounter().GetValue()
		case m.Gauge != nil:
			return m.GetGauge().GetValue()
		case m.Histogram != nil:
			return float64(m.GetHistogram().GetSampleCount())
		}
	}
	return 0
}

// delta checks that name{labels} grew by want between two scrapes.
func delta(t *testing.T, before, after map[string]*dto.MetricFamily, name string, labels map[string]string, want float64) {
	t.Helper()
	if got := value(after, name, labels) - value(before, name, labels); got != want {
		t.Errorf("%s%v grew by %v, want %v", name, labels, got, want)
	}
}

func TestMetricsCountWhatHappened(t *testing.T) {
	f := newFixture(t)
	before := f.scrape()
	for _, want := range []string{"keyd_build_info", "go_goroutines", "process_cpu_seconds_total", "keyd_store_up", "keyd_keys"} {
		if _, ok := before[want]; !ok {
			t.Errorf("/metrics lacks %s", want)
		}
	}

	// Five signs, two refused by the signer's rules.
	good := f.sign(`{"sub":"alice"}`, "1m")
	for range 4 {
		f.sign(`{"sub":"bob"}`, "5m")
	}
	for _, body := range []string{`{"ttl":"1h"}`, `{"claims":{"exp":"soon"}}`} {
		if code, _ := f.call("POST", "/v1/keysets/hs/sign", "svc-token", body); code != 400 {
			t.Fatalf("%s: %d", body, code)
		}
	}

	// Every verification outcome, once each.
	f.verify(good, "")
	f.verify("garbage", signer.CodeMalformed)
	parts := strings.Split(good, ".")
	f.verify(parts[0]+"."+parts[1]+".AAAA", signer.CodeSignature)
	f.verify(headerAlg(t, "HS384", parts), signer.CodeAlgorithm)
	f.verify(signWith(t, f, map[string]any{"sub": "x"}, "unknown-kid"), signer.CodeUnknownKey)
	f.verify(signWith(t, f, map[string]any{"sub": "x"}, ""), signer.CodeMissingClaim)
	now := f.Clock.Now().Unix()
	f.verify(f.sign(`{"nbf":`+itoa(now+300)+`}`, "9m"), signer.CodeNotYetValid)
	f.Clock.Add(2 * time.Minute)
	future := f.sign(`{}`, "1m")
	f.Clock.Add(-2 * time.Minute)
	f.verify(future, signer.CodeIssuedInFuture)
	f.verifyWith(good, `,"issuer":"someone"`, signer.CodeIssuer)
	f.verifyWith(good, `,"audience":["x","y"]`, signer.CodeAudience)
	f.verifyWith(good, `,"subject":"bob"`, signer.CodeSubject)
	f.verifyWith(good, `,"typ":"at+jwt"`, signer.CodeType)
	revoked := f.sign(`{"sub":"zed"}`, "5m")
	if code, body := f.call("POST", "/v1/keysets/hs/revocations", "ops-token", `{"token":"`+revoked+`"}`); code != 200 {
		t.Fatalf("revoke: %d %s", code, body)
	}
	f.verify(revoked, signer.CodeRevoked)
	f.Clock.Add(2 * time.Minute)
	f.verify(good, signer.CodeExpired)

	// Authentication failures.
	f.call("POST", "/v1/keysets/hs/sign", "", `{}`)
	f.call("POST", "/v1/keysets/hs/sign", "wrong", `{}`)
	f.call("POST", "/v1/keysets/hs/sign", "ops-token", `{}`)

	// JWKS: a document, then a revalidation.
	_, _ = f.call("GET", "/.well-known/jwks.json", "", "")
	resp, err := http.Get(f.URL + "/.well-known/jwks.json")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	req, _ := http.NewRequest("GET", f.URL+"/.well-known/jwks.json", nil)
	req.Header.Set("If-None-Match", resp.Header.Get("ETag"))
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 304 {
		t.Fatalf("revalidation: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}

	// A rotation of each trigger, and a destruction.
	ks, _, _ := f.Manager.KeySet("hs")
	f.Clock.Add(2 * time.Minute) // the pending key is old enough
	if code, body := f.call("POST", "/v1/keysets/hs/rotate", "ops-token", ``); code != 200 {
		t.Fatalf("rotate: %d %s", code, body)
	}
	if code, body := f.call("POST", "/v1/keysets/hs/rotate", "ops-token", `{"force":true}`); code != 200 {
		t.Fatalf("forced rotate: %d %s", code, body)
	}
	ks2, _, _ := f.Manager.KeySet("hs")
	pending, _ := ks2.Pending()
	if code, body := f.call("POST", "/v1/keysets/hs/keys/"+pending.ID+"/revoke", "ops-token", ``); code != 200 {
		t.Fatalf("revoke: %d %s", code, body)
	}
	f.Clock.Add(25 * time.Hour) // the schedule is due, and every retired key's grace is over
	if _, err := f.Manager.Tick(context.Background(), "hs"); err != nil {
		t.Fatal(err)
	}
	first, _ := ks.Active()
	if _, ok := mustKeySet(t, f).Key(first.ID); ok {
		t.Fatal("the first key was not destroyed")
	}

	after := f.scrape()
	hs := map[string]string{"keyset": "hs"}
	delta(t, before, after, "keyd_tokens_signed_total", hs, 5+3) // and the nbf, iat and revoked tokens
	delta(t, before, after, "keyd_sign_errors_total", map[string]string{"keyset": "hs", "code": "bad_request"}, 2)
	delta(t, before, after, "keyd_verifications_total", map[string]string{"keyset": "hs", "result": "valid"}, 1)
	for _, code := range signer.VerifyCodes {
		delta(t, before, after, "keyd_verifications_total", map[string]string{"keyset": "hs", "result": code}, 1)
	}
	delta(t, before, after, "keyd_auth_failures_total", map[string]string{"reason": "missing"}, 1)
	delta(t, before, after, "keyd_auth_failures_total", map[string]string{"reason": "unknown_token"}, 1)
	delta(t, before, after, "keyd_auth_failures_total", map[string]string{"reason": "forbidden"}, 1)
	delta(t, before, after, "keyd_jwks_requests_total", map[string]string{"result": "200"}, 2)
	delta(t, before, after, "keyd_jwks_requests_total", map[string]string{"result": "304"}, 1)
	for _, trigger := range []string{"manual", "forced", "revoke", "scheduled"} {
		delta(t, before, after, "keyd_rotations_total", map[string]string{"keyset": "hs", "trigger": trigger}, 1)
	}
	if got := value(after, "keyd_keys_destroyed_total", hs); got < 1 {
		t.Errorf("keyd_keys_destroyed_total = %v, want at least 1", got)
	}
	route := map[string]string{"route": "/v1/keysets/{name}/sign", "code": "200"}
	delta(t, before, after, "keyd_http_requests_total", route, 8)
	delta(t, before, after, "keyd_http_requests_total", map[string]string{"route": "/v1/keysets/{name}/sign", "code": "400"}, 2)
	delta(t, before, after, "keyd_http_requests_total", map[string]string{"route": "/v1/keysets/{name}/sign", "code": "401"}, 2)
	delta(t, before, after, "keyd_http_requests_total", map[string]string{"route": "/v1/keysets/{name}/sign", "code": "403"}, 1)
	delta(t, before, after, "keyd_http_request_duration_seconds", map[string]string{"route": "/v1/keysets/{name}/verify"}, 14)
	if value(after, "keyd_store_operation_duration_seconds", map[string]string{"op": "put"}) == 0 {
		t.Error("no store put observed")
	}

	// Gauges read from the key set at scrape time.
	now2 := f.Clock.Now()
	cur := mustKeySet(t, f)
	active, _ := cur.Active()
	if got := value(after, "keyd_active_key_age_seconds", hs); got != now2.Sub(active.ActivatedAt).Seconds() {
		t.Errorf("keyd_active_key_age_seconds = %v, want %v", got, now2.Sub(active.ActivatedAt).Seconds())
	}
	if got := value(after, "keyd_keys", map[string]string{"keyset": "hs", "state": "active"}); got != 1 {
		t.Errorf("active keys = %v", got)
	}
	next, _ := f.Manager.NextRotation("hs")
	if got := value(after, "keyd_next_rotation_timestamp_seconds", hs); got != float64(next.Unix()) {
		t.Errorf("next rotation = %v, want %v", got, next.Unix())
	}
	if value(after, "keyd_store_up", nil) != 1 {
		t.Error("keyd_store_up is not 1")
	}

	// Every keyd metric the shipped alert rules use exists.
	rules, err := os.ReadFile("../configs/prometheus-alerts.yaml")
	if err != nil {
		t.Fatal(err)
	}
	names := regexp.MustCompile(`keyd_[a-z_]+`).FindAllString(string(rules), -1)
	if len(names) < 5 {
		t.Fatalf("found only %v in the alert rules", names)
	}
	for _, name := range names {
		if fam, ok := after[strings.TrimSuffix(name, "_bucket")]; ok && fam.GetType() == dto.MetricType_HISTOGRAM {
			continue
		}
		if _, ok := after[name]; !ok {
			t.Errorf("configs/prometheus-alerts.yaml uses %s, which keyd does not export", name)
		}
	}

	// No label value carries what a caller sent.
	_, body := f.call("GET", "/metrics", "", "")
	for _, secret := range []string{"alice", "bob", "svc-token", "wrong", good} {
		if strings.Contains(string(body), secret) {
			t.Errorf("/metrics contains %q", secret)
		}
	}
}

func mustKeySet(t *testing.T, f *fixture) *keystore.KeySet {
	t.Helper()
	ks, err := f.Store.Get(context.Background(), "hs")
	if err != nil {
		t.Fatal(err)
	}
	return ks
}

// signWith signs claims with the key set's active HMAC secret through
// go-jose, with the given kid ("" keeps the real one) and no exp.
func signWith(t *testing.T, f *fixture, claims map[string]any, kid string) string {
	t.Helper()
	ks := mustKeySet(t, f)
	active, _ := ks.Active()
	if kid == "" {
		kid = active.ID
	}
	sig, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.HS256, Key: []byte(active.Material)},
		(&jose.SignerOptions{}).WithHeader("kid", kid).WithType("JWT"))
	if err != nil {
		t.Fatal(err)
	}
	tok, err := josejwt.Signed(sig).Claims(claims).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func headerAlg(t *testing.T, alg string, parts []string) string {
	t.Helper()
	return base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"`+alg+`","typ":"JWT"}`)) + "." + parts[1] + "." + parts[2]
}

func itoa(n int64) string { b, _ := json.Marshal(n); return string(b) }
