// Package metrics is keyd's Prometheus instrumentation: every collector
// keyd exports, registered on a registry of its own (never the global
// default), with the Go and process collectors and keyd_build_info.
//
// The parts that count take small interfaces (signer.Observer, the
// rotation events, the store wrapper) that this package implements, so the
// domain packages do not depend on Prometheus. Label children on the hot
// paths are resolved once: per key set when the signer first loads it, per
// route when the API registers it; a request pays for atomic adds and a
// histogram observation, never a lookup by string. Label values are
// known key set names, route patterns, status codes and fixed words,
// never anything a caller sent.
//
// A nil *Metrics is valid and counts nothing (metrics disabled).
package metrics

import (
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/keyd-dev/keyd/internal/version"
	"github.com/keyd-dev/keyd/rotation"
	"github.com/keyd-dev/keyd/signer"
)

// Metrics holds every collector keyd exports.
type Metrics struct {
	reg *prometheus.Registry

	signed        *prometheus.CounterVec
	signErrors    *prometheus.CounterVec
	verifications *prometheus.CounterVec
	legacy        *prometheus.CounterVec

	httpRequests *prometheus.CounterVec
	httpDuration *prometheus.HistogramVec
	authFailures *prometheus.CounterVec
	jwksRequests *prometheus.CounterVec
	jwksOK       prometheus.Counter
	jwks304      prometheus.Counter

	rotations *prometheus.CounterVec
	destroyed *prometheus.CounterVec

	storeDuration *prometheus.HistogramVec
	storeErrors   *prometheus.CounterVec

	auditRecords  prometheus.Counter
	auditWrites   prometheus.Histogram
	auditErrors   prometheus.Counter
	custodyErrors *prometheus.CounterVec
	keysRefused   *prometheus.CounterVec
	stateRejected *prometheus.CounterVec
	backups       backupMetrics
	publish       publishMetrics
}

// New returns the collectors, registered on a new registry with the Go and
// process collectors and keyd_build_info.
func New() *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		signed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keyd_tokens_signed_total", Help: "Tokens signed, by key set.",
		}, []string{"keyset"}),
		signErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keyd_sign_errors_total", Help: "Sign requests the signer refused, by key set and API error code.",
		}, []string{"keyset", "code"}),
		verifications: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keyd_verifications_total", Help: "Verifications by key set and result: valid, or the failure code.",
		}, []string{"keyset", "result"}),
		legacy: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keyd_legacy_verifications_total", Help: "Valid tokens without a kid, verified with the key set's legacy key: when it stays flat, the legacy key can go.",
		}, []string{"keyset"}),
		httpRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keyd_http_requests_total", Help: "HTTP requests by route pattern and status code.",
		}, []string{"route", "code"}),
		httpDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "keyd_http_request_duration_seconds", Help: "Time to answer HTTP requests, by route pattern.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}, []string{"route"}),
		authFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keyd_auth_failures_total", Help: "Refused API callers: missing credentials, unknown_token, unknown_client (a certificate naming no client), or forbidden (lacking the scope).",
		}, []string{"reason"}),
		jwksRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keyd_jwks_requests_total", Help: "JWKS documents served (200) and revalidated (304).",
		}, []string{"result"}),
		rotations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keyd_rotations_total", Help: "Key transitions this process made, by key set and trigger: scheduled, manual, forced, revoke.",
		}, []string{"keyset", "trigger"}),
		destroyed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keyd_keys_destroyed_total", Help: "Keys this process destroyed after their grace period, by key set.",
		}, []string{"keyset"}),
		storeDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "keyd_store_operation_duration_seconds", Help: "Time of key store operations (get, list, put).",
			Buckets: prometheus.ExponentialBuckets(.0005, 2.5, 10),
		}, []string{"op"}),
		storeErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keyd_store_errors_total", Help: "Key store operations that failed (not-found and version conflicts are answers, not errors).",
		}, []string{"op"}),
		auditRecords: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "keyd_audit_records_total", Help: "Audit records written.",
		}),
		auditWrites: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "keyd_audit_write_duration_seconds", Help: "Time to write a batch of audit records, its fsync included with audit.required (signing waits for it then).",
			Buckets: prometheus.ExponentialBuckets(.0001, 2.5, 10),
		}),
		auditErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "keyd_audit_write_errors_total", Help: "Batches of audit records that could not be written: lost, or with audit.required refused.",
		}),
		custodyErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keyd_custody_errors_total", Help: "Operations of a key set's key custody (Vault Transit, PKCS#11) that failed: create, sign, destroy, list.",
		}, []string{"keyset", "op"}),
		keysRefused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keyd_keys_refused_total", Help: "Stored key sets refused for a key not of their custody (a private key in the store, another custody, a reference keyd does not make for the key set), and custody objects not destroyed for the same reason, by key set. Anything but 0 means someone wrote keyd's store.",
		}, []string{"keyset"}),
		stateRejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keyd_token_state_rejected_total", Help: "Token state records read from Redis that keyd did not seal (forged, altered or unsealed), refused, by kind. Anything but 0 means someone wrote keyd's Redis.",
		}, []string{"kind"}),
	}
	m.jwksOK = m.jwksRequests.WithLabelValues("200")
	m.jwks304 = m.jwksRequests.WithLabelValues("304")
	for _, kind := range []string{"refresh", "refresh-subject", "revocation"} {
		m.stateRejected.WithLabelValues(kind) // exported at 0 from the start, for increase()
	}
	for _, r := range []string{"missing", "unknown_token", "unknown_client", "forbidden"} {
		m.authFailures.WithLabelValues(r) // exported at 0 from the start, for rate()
	}
	v := version.Get()
	buildInfo := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "keyd_build_info", Help: "Always 1; the labels say which keyd runs.",
		ConstLabels: prometheus.Labels{"version": v.Version, "commit": v.Commit, "goversion": v.GoVersion, "tags": v.Tags},
	})
	buildInfo.Set(1)
	m.reg.MustRegister(
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		buildInfo, m.signed, m.signErrors, m.verifications, m.legacy, m.httpRequests, m.httpDuration, m.authFailures,
		m.jwksRequests, m.rotations, m.destroyed, m.storeDuration, m.storeErrors, m.auditRecords,
		m.auditWrites, m.auditErrors, m.custodyErrors, m.keysRefused, m.stateRejected,
	)
	m.backups = newBackupMetrics(m.reg)
	m.publish = newPublishMetrics(m.reg)
	return m
}

// Registry is where every keyd collector is registered.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler serves the registry in the Prometheus exposition formats.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// --- signer -------------------------------------------------------------------

// KeySet implements signer.Observer: it resolves the key set's counters
// once.
func (m *Metrics) KeySet(name string) signer.KeySetObserver {
	if m == nil {
		return nop{}
	}
	k := &keySetCounters{m: m, name: name, signed: m.signed.WithLabelValues(name), valid: m.verifications.WithLabelValues(name, "valid"),
		legacy: m.legacy.WithLabelValues(name)}
	k.badRequest = m.signErrors.WithLabelValues(name, "bad_request")
	for _, code := range signer.VerifyCodes {
		k.failures = append(k.failures, codeCounter{code, m.verifications.WithLabelValues(name, code)})
	}
	return k
}

type nop struct{}

func (nop) Signed()           {}
func (nop) SignFailed(string) {}
func (nop) Verified(string)   {}
func (nop) LegacyVerified()   {}

type codeCounter struct {
	code string
	c    prometheus.Counter
}

type keySetCounters struct {
	m          *Metrics
	name       string
	signed     prometheus.Counter
	badRequest prometheus.Counter
	valid      prometheus.Counter
	legacy     prometheus.Counter
	failures   []codeCounter // one per signer.VerifyCodes, in order
}

func (k *keySetCounters) Signed() { k.signed.Inc() }

func (k *keySetCounters) SignFailed(code string) {
	if code == "bad_request" {
		k.badRequest.Inc()
		return
	}
	k.m.signErrors.WithLabelValues(k.name, code).Inc() // rare: faults
}

func (k *keySetCounters) LegacyVerified() { k.legacy.Inc() }

func (k *keySetCounters) Verified(code string) {
	if code == "" {
		k.valid.Inc()
		return
	}
	for _, f := range k.failures { // a handful of constant strings
		if f.code == code {
			f.c.Inc()
			return
		}
	}
	k.m.verifications.WithLabelValues(k.name, code).Inc()
}

// --- rotation -----------------------------------------------------------------

// Event counts a rotation event (rotation.Options.Events).
func (m *Metrics) Event(e rotation.Event) {
	if m == nil {
		return
	}
	switch e.Kind {
	case rotation.EventRotated, rotation.EventRevoked:
		m.rotations.WithLabelValues(e.KeySet, e.Trigger).Inc()
	case rotation.EventDestroyed:
		m.destroyed.WithLabelValues(e.KeySet).Inc()
	}
}

// --- HTTP ---------------------------------------------------------------------

// Route holds one route's HTTP collectors, resolved when the route is
// registered. A nil *Route counts nothing.
type Route struct {
	requests *prometheus.CounterVec
	pattern  string
	duration prometheus.Observer
	codes    [600]atomic.Pointer[prometheus.Counter] // by status code, resolved on first use
}

// Route returns the collectors of the route registered as pattern; "" is
// for requests that matched no route.
func (m *Metrics) Route(pattern string) *Route {
	if m == nil {
		return nil
	}
	if pattern == "" {
		pattern = "unmatched"
	}
	return &Route{requests: m.httpRequests, pattern: pattern, duration: m.httpDuration.WithLabelValues(pattern)}
}

// Observe counts one answered request.
func (r *Route) Observe(status int, d time.Duration) {
	if r == nil {
		return
	}
	if status == 0 { // the handler wrote nothing: net/http answers 200
		status = http.StatusOK
	}
	r.duration.Observe(d.Seconds())
	if status < 100 || status >= len(r.codes) {
		r.requests.WithLabelValues(r.pattern, strconv.Itoa(status)).Inc()
		return
	}
	c := r.codes[status].Load()
	if c == nil {
		counter := r.requests.WithLabelValues(r.pattern, strconv.Itoa(status))
		c = &counter
		r.codes[status].Store(c)
	}
	(*c).Inc()
}

// AuthFailure counts a refused caller: "missing", "unknown_token",
// "unknown_client" or "forbidden".
func (m *Metrics) AuthFailure(reason string) {
	if m != nil {
		m.authFailures.WithLabelValues(reason).Inc()
	}
}

// JWKSServed counts a JWKS answer: the document, or 304.
func (m *Metrics) JWKSServed(notModified bool) {
	switch {
	case m == nil:
	case notModified:
		m.jwks304.Inc()
	default:
		m.jwksOK.Inc()
	}
}

// --- audit --------------------------------------------------------------------

// AuditWritten counts a batch of n audit records written in took.
func (m *Metrics) AuditWritten(n int, took time.Duration) {
	if m != nil {
		m.auditRecords.Add(float64(n))
		m.auditWrites.Observe(took.Seconds())
	}
}

// AuditFailed counts a batch of audit records that could not be written.
func (m *Metrics) AuditFailed() {
	if m != nil {
		m.auditErrors.Inc()
	}
}

// CustodyFailed counts a failed operation of a key set's custody
// (custody.Watch calls it).
func (m *Metrics) CustodyFailed(keyset, op string) {
	if m == nil {
		return
	}
	m.custodyErrors.WithLabelValues(keyset, op).Inc()
}

// KeyRefused counts a stored key refused for not being of its key set's
// custody (rotation.Options.Refused).
func (m *Metrics) KeyRefused(keyset string) {
	if m == nil {
		return
	}
	m.keysRefused.WithLabelValues(keyset).Inc()
}

// TokenStateRejected counts a token state record refused as not sealed by
// keyd (tokenstate/sealed).
func (m *Metrics) TokenStateRejected(kind string) {
	if m == nil {
		return
	}
	m.stateRejected.WithLabelValues(kind).Inc()
}
