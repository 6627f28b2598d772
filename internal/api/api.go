// Package api is keyd's HTTP API: routing, bearer-token authentication and
// scopes, JSON decoding with size limits, and the one place where domain
// errors become HTTP statuses. It is internal because its only user is the
// daemon; clients speak HTTP (or use the keyd CLI).
//
// Every error answer is {"error": {"code": "...", "message": "..."}}. The
// message is written for the caller and never carries internals: faults
// (5xx) are logged in full and answered with a fixed message.
package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/keyd-dev/keyd/audit"
	"github.com/keyd-dev/keyd/backup"
	"github.com/keyd-dev/keyd/errcode"
	"github.com/keyd-dev/keyd/internal/authguard"
	"github.com/keyd-dev/keyd/internal/config"
	"github.com/keyd-dev/keyd/jwks"
	"github.com/keyd-dev/keyd/keystore"
	"github.com/keyd-dev/keyd/metrics"
	"github.com/keyd-dev/keyd/openapi"
	"github.com/keyd-dev/keyd/refresh"
	"github.com/keyd-dev/keyd/rotation"
	"github.com/keyd-dev/keyd/signer"
)

// MaxBodyBytes is the largest request body accepted (413 beyond).
const MaxBodyBytes = 1 << 20

// Options wire the API to the daemon's parts.
type Options struct {
	Signer  *signer.Signer
	JWKS    *jwks.Publisher
	Manager *rotation.Manager
	Auth    *Authenticator
	Logger  *slog.Logger
	// Metrics counts requests (nil: no metrics). MetricsRoute serves them
	// at GET /metrics unless they have an address of their own.
	Metrics      *metrics.Metrics
	MetricsRoute bool
	// Audit records security events (nil: no audit trail).
	Audit *audit.Log
	// Refresh issues and refreshes token pairs (nil: not offered).
	Refresh *refresh.Service
	// Backup writes a backup of every key set and all token state to w,
	// encrypted to recipients (POST /v1/backup); nil: not offered.
	Backup func(ctx context.Context, w io.Writer, recipients []string) (*backup.Manifest, error)
	// LastBackup is the last scheduled backup's success and the last
	// attempt's failure, for admin callers of /readyz; nil: none scheduled.
	LastBackup func() (time.Time, error)
	// Reload re-reads the config file (POST /v1/reload); nil: not offered.
	Reload func(context.Context) error
	// Health reports whether the key sets are loaded (until then every
	// endpoint but /healthz and /readyz answers 503) and the last store
	// failure (nil when the store answers).
	Health func() (started bool, storeErr error)
	// TokenState, when set, reports the token state's failure (Redis
	// unreachable), probing it again if one was recorded; nil: it answers.
	TokenState func(context.Context) error
	// Custodies names a key set whose key custody failed its last
	// operation, and why ("" when none did); nil: no custody.
	Custodies func() (keyset string, err error)
	// AuthGuard rate-limits failed authentications per source and writes
	// their aggregated audit records; its owner runs its flush loop. nil:
	// one whose records go to Audit, never flushed (tests).
	AuthGuard *authguard.Guard
}

type server struct {
	Options
	unmatched *metrics.Route
}

// New returns the API handler.
func New(o Options) http.Handler {
	h, _ := build(o)
	return h
}

// Patterns lists the routes New registers for o ("GET /healthz", ...), so
// that tests can hold them to the OpenAPI document.
func Patterns(o Options) []string {
	_, patterns := build(o)
	return patterns
}

func build(o Options) (http.Handler, []string) {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Health == nil {
		o.Health = func() (bool, error) { return true, nil }
	}
	if o.AuthGuard == nil {
		o.AuthGuard = authguard.New(authguard.Options{Record: o.Audit.Note})
	}
	s := &server{Options: o, unmatched: o.Metrics.Route("")}
	mux := http.NewServeMux()
	var patterns []string
	handle := func(pattern string, h http.HandlerFunc) {
		mux.Handle(pattern, s.routed(pattern, h))
		patterns = append(patterns, pattern)
	}
	handle("GET /healthz", s.healthz)
	handle("GET /openapi.json", openapiJSON)
	handle("GET /readyz", s.readyz)
	if o.Metrics != nil && o.MetricsRoute {
		handle("GET /metrics", o.Metrics.Handler().ServeHTTP)
	}
	handle("GET /.well-known/jwks.json", s.loaded(s.jwksAll))
	handle("GET /v1/keysets/{name}/jwks.json", s.loaded(s.jwksKeySet))
	handle("POST /v1/keysets/{name}/sign", s.loaded(s.scoped(config.ScopeSign, s.sign)))
	handle("POST /v1/keysets/{name}/sign-batch", s.loaded(s.scoped(config.ScopeSign, s.signBatch)))
	handle("POST /v1/keysets/{name}/verify", s.loaded(s.scoped(config.ScopeVerify, s.verify)))
	handle("GET /v1/keysets", s.loaded(s.admin(s.listKeySets)))
	handle("GET /v1/keysets/{name}", s.loaded(s.admin(s.getKeySet)))
	handle("POST /v1/keysets/{name}/rotate", s.loaded(s.admin(s.rotate)))
	handle("POST /v1/keysets/{name}/keys/{kid}/revoke", s.loaded(s.admin(s.revoke)))
	handle("POST /v1/keysets/{name}/keys/import", s.loaded(s.admin(s.importKey)))
	handle("GET /v1/keysets/{name}/keys/{file}", s.loaded(s.keyPEM))
	handle("GET /.well-known/openid-configuration", s.loaded(s.discovery))
	handle("POST /v1/keysets/{name}/revocations", s.loaded(s.admin(s.addRevocation)))
	handle("POST /v1/keysets/{name}/revocations:import", s.loaded(s.admin(s.importRevocations)))
	handle("GET /v1/keysets/{name}/revocations", s.loaded(s.admin(s.listRevocations)))
	handle("GET /v1/keysets/{name}/revocations.jwt", s.loaded(s.revocationList))
	if o.Refresh != nil {
		handle("POST /v1/keysets/{name}/token-pair", s.loaded(s.scoped(config.ScopeSign, s.tokenPair)))
		handle("POST /v1/keysets/{name}/refresh", s.loaded(s.scoped(config.ScopeSign, s.refresh)))
	}
	if o.Reload != nil {
		handle("POST /v1/reload", s.admin(s.reload))
	}
	if o.Backup != nil {
		handle("POST /v1/backup", s.loaded(s.admin(s.backup)))
	}
	return s.recoverer(drainBodies(s.logRequests(jsonFallback(mux)))), patterns
}

// maxDrain bounds what is read and dropped of a body the handler did not
// read (a refused request): past it the connection is closed unread.
const maxDrain = 16 << 20

// drainBodies reads what the handler left of a request body before the
// answer goes out (the answer waits in the server's buffer until the
// handler returns). A server that closes a connection with unread input
// makes the kernel send a reset, which can destroy the 401 or 413 before
// the client has read it; the server itself drops only 256 KiB. The read
// is bounded by maxDrain and the server's ReadTimeout. A body the handler
// read to its end costs one read that returns EOF at once.
func drainBodies(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body := r.Body
		next.ServeHTTP(w, r)
		if body != nil && body != http.NoBody && r.ContentLength != 0 {
			lr := drainers.Get().(*io.LimitedReader) // pooled: no allocation per request
			lr.R, lr.N = body, maxDrain
			_, _ = io.Copy(io.Discard, lr)
			lr.R = nil
			drainers.Put(lr)
		}
	})
}

var drainers = sync.Pool{New: func() any { return new(io.LimitedReader) }}

// openapiJSON serves the OpenAPI document, rendered once.
var openapiJSON = func() http.HandlerFunc {
	h, err := openapi.Handler()
	if err != nil { // the document is embedded and tested: a build fault
		panic(err)
	}
	return h.ServeHTTP
}()

// routed tells the request's recorder which route answers it, for the
// route's metrics, resolved here once. A route writes past jsonFallback's
// rewriter, which is for the mux's own answers.
func (s *server) routed(pattern string, next http.HandlerFunc) http.Handler {
	_, path, _ := strings.Cut(pattern, " ")
	route := s.Metrics.Route(path)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if e, ok := w.(*errorRewriter); ok {
			w = e.ResponseWriter
		}
		if rec, ok := w.(*statusRecorder); ok {
			rec.route = route
		}
		next(w, r)
	})
}

// --- errors -----------------------------------------------------------------

type apiError struct {
	status  int
	code    string
	message string
	extra   map[string]any
}

func (e *apiError) Error() string { return e.message }

// errorf is an answer of code (errcode's table: its HTTP status comes from
// there, as the gRPC signer's code and the client's sentinel do).
func errorf(code, format string, args ...any) *apiError {
	return &apiError{status: errcode.HTTP(code), code: code, message: fmt.Sprintf(format, args...)}
}

// toAPIError maps domain errors to statuses. Anything unknown is a 500 with
// a fixed message; the caller logs the real error.
func toAPIError(err error) *apiError {
	var ae *apiError
	var se *signer.Error
	var early *rotation.TooEarlyError
	switch {
	case errors.As(err, &ae):
		return ae
	case errors.As(err, &early):
		e := errorf("rotation_too_early", "%s", early.Error())
		e.extra = map[string]any{"safe_at": early.SafeAt.UTC().Format(time.RFC3339)}
		return e
	case errors.Is(err, signer.ErrUnknownKeySet), errors.Is(err, rotation.ErrUnknownKeySet), errors.Is(err, keystore.ErrNotFound):
		return errorf("keyset_not_found", "%s", err.Error())
	case errors.Is(err, keystore.ErrKeyNotFound):
		return errorf("key_not_found", "%s", err.Error())
	case errors.Is(err, refresh.ErrReused):
		return errorf("refresh_token_reused", "%s", err.Error())
	case errors.Is(err, refresh.ErrExpired):
		return errorf("refresh_token_expired", "%s", err.Error())
	case errors.Is(err, refresh.ErrRevoked):
		return errorf("refresh_token_revoked", "%s", err.Error())
	case errors.Is(err, refresh.ErrInvalid):
		return errorf("refresh_token_invalid", "%s", err.Error())
	case errors.Is(err, refresh.ErrDisabled):
		return errorf("refresh_not_enabled", "%s: set keysets[].refresh.ttl", err.Error())
	case errors.Is(err, refresh.ErrClaims):
		return errorf("bad_request", "%s", err.Error())
	case errors.Is(err, keystore.ErrRevocationLimit):
		return errorf("revocation_limit", "%s; entries leave as the tokens they cover expire. Revoke the key instead, or raise keysets[].max_revocations", err.Error())
	case errors.Is(err, keystore.ErrInvalidImport):
		return errorf("invalid_key", "%s", err.Error())
	case errors.Is(err, keystore.ErrKeyExists):
		return errorf("key_exists", "%s", err.Error())
	case errors.Is(err, keystore.ErrInvalidTransition):
		return errorf("conflict", "%s", err.Error())
	case errors.As(err, &se) && errors.Is(err, signer.ErrInvalidRequest):
		return errorf("bad_request", "%s", se.Reason)
	case errors.Is(err, audit.ErrUnavailable):
		return errorf("audit_unavailable", "the audit trail cannot be written, and audit.required refuses to sign without it")
	case errors.Is(err, keystore.ErrCustodyUnavailable):
		return errorf("custody_unavailable", "the key set's key custody (Vault Transit) did not answer; try again")
	case errors.Is(err, keystore.ErrUnavailable):
		return errorf("store_unavailable", "the key store is unavailable; try again")
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return errorf("timeout", "the request was cancelled or timed out")
	}
	return errorf("internal", "internal error")
}

func (s *server) fail(w http.ResponseWriter, r *http.Request, err error) {
	writeError(w, s.problem(r, err))
}

// problem maps err for the caller and logs it in full when it is a fault.
func (s *server) problem(r *http.Request, err error) *apiError {
	e := toAPIError(err)
	if e.status >= 500 {
		s.Logger.Error("request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	}
	return e
}

func writeError(w http.ResponseWriter, e *apiError) {
	if e.extra == nil {
		writeJSON(w, e.status, struct {
			Error ErrorBody `json:"error"`
		}{ErrorBody{Code: e.code, Message: e.message}})
		return
	}
	body := map[string]any{"code": e.code, "message": e.message}
	for k, v := range e.extra {
		body[k] = v
	}
	writeJSON(w, e.status, map[string]any{"error": body})
}

// writeJSON answers v as compact JSON (clients that show it to people,
// such as the keyd CLI, indent it themselves).
func writeJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil { // only keyd's own types get here; a bug, not input
		body, status = []byte(`{"error":{"code":"internal","message":"internal error"}}`), http.StatusInternalServerError
	}
	body = append(body, '\n')
	h := w.Header()
	h["Content-Type"] = contentTypeJSON
	h["Cache-Control"] = noStore
	h["Content-Length"] = []string{strconv.Itoa(len(body))}
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// Header values shared by every answer (net/http only reads them).
var (
	contentTypeJSON = []string{"application/json"}
	noStore         = []string{"no-store"}
)

// --- middleware ---------------------------------------------------------------

// loaded answers 503 until the key sets are loaded: an empty JWKS cached by
// a verifier, or a 404 for a key set that exists, would be worse.
func (s *server) loaded(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if started, _ := s.Health(); !started {
			w.Header().Set("Retry-After", "1")
			writeError(w, errorf("not_ready", "keyd is starting: the key sets are not loaded yet"))
			return
		}
		next(w, r)
	}
}

// authenticated runs next for a caller whose token holds scope(r).
func (s *server) authenticated(scope func(*http.Request) string, next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		p, reason := s.Auth.AuthenticateRequest(r)
		if p == nil {
			s.Metrics.AuthFailure(reason)
			if wait, limited := s.AuthGuard.Failed(s.AuthGuard.Source(r), reason, r.Pattern); limited {
				w.Header().Set("Retry-After", strconv.Itoa(int(wait/time.Second)+1))
				writeError(w, errorf("too_many_auth_failures", "too many failed authentications from this address: retry later"))
				return
			}
			w.Header().Set("WWW-Authenticate", `Bearer realm="keyd"`)
			msg := "missing or unknown bearer token"
			if reason == ReasonUnknownClient {
				msg = "the client certificate names no configured client"
			}
			writeError(w, errorf("unauthorized", "%s", msg))
			return
		}
		if want := scope(r); !p.Can(want) {
			s.Metrics.AuthFailure(ReasonForbidden)
			s.Audit.Note(audit.Record{Event: audit.EventAuthFailed, Reason: ReasonForbidden, Caller: p.Name, Scope: want, Route: r.Pattern, Remote: r.RemoteAddr})
			writeError(w, errorf("forbidden", "caller %q lacks scope %q", p.Name, want))
			return
		}
		if info := requestOf(r); info != nil {
			info.principal = p
		}
		next(w, r)
	}
}

func (s *server) scoped(kind string, next http.HandlerFunc) http.HandlerFunc {
	return s.authenticated(func(r *http.Request) string { return kind + ":" + r.PathValue("name") }, next)
}

func (s *server) admin(next http.HandlerFunc) http.HandlerFunc {
	return s.authenticated(func(*http.Request) string { return config.ScopeAdmin }, next)
}

// statusRecorder is what every handler writes to: it keeps the status for
// the request log. Its info rides in the request's context (requestOf),
// allocated with it.
type statusRecorder struct {
	http.ResponseWriter
	status int
	route  *metrics.Route // nil until a route matched
	info   requestInfo
}

// requestInfo is what the API learns of a request as it goes, kept in
// its context: the authenticated caller.
type requestInfo struct {
	principal *Principal
}

type requestKey struct{}

// requestOf returns the info of r, nil outside the API's middleware.
func requestOf(r *http.Request) *requestInfo {
	info, _ := r.Context().Value(requestKey{}).(*requestInfo)
	return info
}

// caller names the authenticated caller of r, or "".
func caller(r *http.Request) string {
	if info := requestOf(r); info != nil && info.principal != nil {
		return info.principal.Name
	}
	return ""
}

// Unwrap lets http.ResponseController reach the connection (a handler
// that needs longer deadlines: the revocation import).
func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

func (r *statusRecorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *statusRecorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.ResponseWriter.Write(b)
}

// logRequests logs method, path, status, duration and the caller's token
// name (at debug level, or warn for 5xx); never bodies or headers.
func (s *server) logRequests(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w, route: s.unmatched}
		r = r.WithContext(context.WithValue(r.Context(), requestKey{}, &rec.info))
		next.ServeHTTP(rec, r)
		rec.route.Observe(rec.status, time.Since(start))
		// Debug: sign and verify are the hot path. Rotations and
		// revocations log themselves at info or warn.
		level := slog.LevelDebug
		if rec.status >= 500 && r.URL.Path != "/readyz" {
			// A 503 from /readyz is its answer, not a failure: a probe
			// every few seconds through a long start would flood the log.
			level = slog.LevelWarn
		}
		if s.Logger.Enabled(r.Context(), level) { // spare the hot path the arguments
			s.Logger.Log(r.Context(), level, "request", "method", r.Method, "path", r.URL.Path, "status", rec.status,
				"duration", time.Since(start), "caller", caller(r))
		}
	})
}

// recoverer turns a panic into a 500 so that one bad request never takes
// the daemon down. The panic value is not logged (it could hold anything);
// the stack is.
func (s *server) recoverer(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				s.Logger.Error("panic serving request", "method", r.Method, "path", r.URL.Path, "stack", string(debug.Stack()))
				writeError(w, errorf("internal", "internal error"))
			}
		}()
		next.ServeHTTP(w, r)
	})
}

// jsonFallback answers the mux's own 404 and 405 in keyd's JSON error
// format instead of plain text. The mux matches each request once: routes
// write past the rewriter (routed unwraps it), so what reaches it is the
// mux's own answer.
func jsonFallback(mux *http.ServeMux) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mux.ServeHTTP(&errorRewriter{ResponseWriter: w}, r)
	})
}

// errorRewriter replaces the body of the mux's error pages (404, 405) and
// passes its other answers (a redirect to a cleaned path) through.
type errorRewriter struct {
	http.ResponseWriter
	state rewriteState
}

type rewriteState uint8

const (
	unwritten rewriteState = iota
	rewritten
	passed
)

// Unwrap lets http.ResponseController reach the connection.
func (e *errorRewriter) Unwrap() http.ResponseWriter { return e.ResponseWriter }

func (e *errorRewriter) WriteHeader(code int) {
	switch {
	case e.state == passed:
		e.ResponseWriter.WriteHeader(code)
		return
	case e.state == rewritten:
		return
	case code != http.StatusNotFound && code != http.StatusMethodNotAllowed:
		e.state = passed
		e.ResponseWriter.WriteHeader(code)
		return
	}
	e.state = rewritten
	e.Header().Del("X-Content-Type-Options")
	if code == http.StatusMethodNotAllowed {
		writeError(e.ResponseWriter, errorf("method_not_allowed", "method not allowed here (the Allow header lists the allowed ones)"))
		return
	}
	writeError(e.ResponseWriter, errorf("not_found", "no such endpoint"))
}

func (e *errorRewriter) Write(b []byte) (int, error) {
	if e.state == unwritten {
		e.WriteHeader(http.StatusOK)
	}
	if e.state == passed {
		return e.ResponseWriter.Write(b)
	}
	return len(b), nil
}
