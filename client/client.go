// Package client is keyd's Go client: typed calls for every API endpoint,
// with context, a timeout, retries of 503 answers with backoff, and errors
// that keep the API's code, so callers can test them with errors.Is:
//
//	c, err := client.New("https://keys.internal:8443", client.WithToken(os.Getenv("KEYD_TOKEN")))
//	tok, err := c.Sign(ctx, "default", map[string]any{"sub": "alice"}, 5*time.Minute)
//	if errors.Is(err, client.ErrKeySetNotFound) { ... }
//
// The keyd CLI is built on it. It imports nothing of the daemon, so other
// modules can use it.
package client

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/keyd-dev/keyd/errcode"
)

// Error is an error answer of the API: its HTTP status, its stable code
// and its message. errors.Is matches it against the Err values below by
// code.
type Error struct {
	Status  int
	Code    string
	Message string
	// SafeAt is when a rotation refused as rotation_too_early becomes safe.
	SafeAt time.Time

	retryAfter time.Duration
}

func (e *Error) Error() string { return fmt.Sprintf("%s (HTTP %d, %s)", e.Message, e.Status, e.Code) }

// Is matches errors of the same code.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Code == e.Code && t.Status == 0
}

// Errors to test with errors.Is, one per code of keyd's table (package
// errcode, which the HTTP API and the gRPC signer answer from too).
var (
	ErrBadJSON             = &Error{Code: errcode.BadJSON}
	ErrBadRequest          = &Error{Code: errcode.BadRequest}
	ErrInvalidKey          = &Error{Code: errcode.InvalidKey}
	ErrInvalidToken        = &Error{Code: errcode.InvalidToken}
	ErrUnauthorized        = &Error{Code: errcode.Unauthorized}
	ErrForbidden           = &Error{Code: errcode.Forbidden}
	ErrNotFound            = &Error{Code: errcode.NotFound}
	ErrKeySetNotFound      = &Error{Code: errcode.KeySetNotFound}
	ErrKeyNotFound         = &Error{Code: errcode.KeyNotFound}
	ErrCertificateNotFound = &Error{Code: errcode.CertificateNotFound}
	ErrRefreshNotEnabled   = &Error{Code: errcode.RefreshNotEnabled}
	ErrRequestTimeout      = &Error{Code: errcode.RequestTimeout}
	ErrConflict            = &Error{Code: errcode.Conflict}
	ErrKeyExists           = &Error{Code: errcode.KeyExists}
	ErrRevocationLimit     = &Error{Code: errcode.RevocationLimit}
	ErrRotationTooEarly    = &Error{Code: errcode.RotationTooEarly}
	ErrTooLarge            = &Error{Code: errcode.TooLarge}
	ErrBodyTooLarge        = &Error{Code: errcode.BodyTooLarge}
	ErrReloadRefused       = &Error{Code: errcode.ReloadRefused}
	ErrTooManyAuthFailures = &Error{Code: errcode.TooManyAuthFailures}
	ErrRefreshTokenReused  = &Error{Code: errcode.RefreshTokenReused}
	ErrRefreshTokenExpired = &Error{Code: errcode.RefreshTokenExpired}
	ErrRefreshTokenRevoked = &Error{Code: errcode.RefreshTokenRevoked}
	ErrRefreshTokenInvalid = &Error{Code: errcode.RefreshTokenInvalid}
	ErrInternal            = &Error{Code: errcode.Internal}
	ErrNotReady            = &Error{Code: errcode.NotReady}
	ErrStoreUnavailable    = &Error{Code: errcode.StoreUnavailable}
	ErrAuditUnavailable    = &Error{Code: errcode.AuditUnavailable}
	ErrCustodyUnavailable  = &Error{Code: errcode.CustodyUnavailable}
	ErrTimeout             = &Error{Code: errcode.Timeout}
	ErrMethodNotAllowed    = &Error{Code: errcode.MethodNotAllowed}
)

// sentinels lists the Err values above (a test holds them to the table).
var sentinels = []*Error{
	ErrBadJSON, ErrBadRequest, ErrInvalidKey, ErrInvalidToken, ErrUnauthorized, ErrForbidden, ErrNotFound,
	ErrKeySetNotFound, ErrKeyNotFound, ErrCertificateNotFound, ErrRefreshNotEnabled, ErrRequestTimeout,
	ErrConflict, ErrKeyExists, ErrRevocationLimit, ErrRotationTooEarly, ErrTooLarge, ErrBodyTooLarge,
	ErrReloadRefused, ErrTooManyAuthFailures, ErrRefreshTokenReused, ErrRefreshTokenExpired,
	ErrRefreshTokenRevoked, ErrRefreshTokenInvalid, ErrInternal, ErrNotReady, ErrStoreUnavailable,
	ErrAuditUnavailable, ErrCustodyUnavailable, ErrTimeout, ErrMethodNotAllowed,
}

// Client calls one keyd.
type Client struct {
	base    string
	token   string
	http    *http.Client
	retries int
	backoff time.Duration
	notice  func(attempt int, wait time.Duration, err error)
}

// Option configures a Client.
type Option func(*Client) error

// WithToken sends token as the bearer credential.
func WithToken(token string) Option {
	return func(c *Client) error { c.token = strings.TrimSpace(token); return nil }
}

// WithHTTPClient uses hc (its transport, TLS and timeout).
func WithHTTPClient(hc *http.Client) Option {
	return func(c *Client) error { c.http = hc; return nil }
}

// WithCAFile trusts the PEM CA bundle at path for an https address.
func WithCAFile(path string) Option {
	return func(c *Client) error {
		pem, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return fmt.Errorf("CA file %s holds no PEM certificate", path)
		}
		c.http.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}
		return nil
	}
}

// WithTimeout bounds each request (default 30s).
func WithTimeout(d time.Duration) Option {
	return func(c *Client) error { c.http.Timeout = d; return nil }
}

// WithRetries retries a request answered 503 (keyd starting, its store or
// audit trail unavailable) up to n times, waiting backoff, then twice that,
// and so on, or what Retry-After says (default: 3 times from 200ms).
func WithRetries(n int, backoff time.Duration) Option {
	return func(c *Client) error { c.retries, c.backoff = n, backoff; return nil }
}

// WithRetryNotice is told of each retry of a 503 answer before its wait
// (the CLI says so, rather than wait silently).
func WithRetryNotice(f func(attempt int, wait time.Duration, err error)) Option {
	return func(c *Client) error { c.notice = f; return nil }
}

// New returns a Client of the keyd at baseURL (http://127.0.0.1:8080).
func New(baseURL string, opts ...Option) (*Client, error) {
	u, err := url.Parse(baseURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("keyd address %q is not an http(s) URL", baseURL)
	}
	c := &Client{base: strings.TrimRight(baseURL, "/"), http: &http.Client{Timeout: 30 * time.Second}, retries: 3, backoff: 200 * time.Millisecond}
	for _, o := range opts {
		if err := o(c); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// do sends a JSON request and decodes the answer into out (nil: ignore),
// retrying 503 answers.
func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	var body []byte
	if in != nil {
		var err error
		if body, err = json.Marshal(in); err != nil {
			return err
		}
	}
	wait := c.backoff
	for attempt := 0; ; attempt++ {
		err := c.once(ctx, method, path, body, out)
		var e *Error
		if !errors.As(err, &e) || e.Status != http.StatusServiceUnavailable || attempt >= c.retries {
			return err
		}
		if e.retryAfter > 0 {
			wait = e.retryAfter
		}
		if c.notice != nil {
			c.notice(attempt+1, wait, err)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return err
		case <-t.C:
		}
		wait *= 2
	}
}

func (c *Client) once(ctx context.Context, method, path string, body []byte, out any) error {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("cannot reach keyd at %s: %w", c.base, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode >= 300 {
		return apiError(resp, data)
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("keyd answered %s %s with something else than expected: %w", method, path, err)
	}
	return nil
}

func apiError(resp *http.Response, data []byte) error {
	var wrapped struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
			SafeAt  string `json:"safe_at"`
		} `json:"error"`
	}
	e := &Error{Status: resp.StatusCode, Code: "http_" + strconv.Itoa(resp.StatusCode), Message: http.StatusText(resp.StatusCode)}
	if json.Unmarshal(data, &wrapped) == nil && wrapped.Error.Code != "" {
		e.Code, e.Message = wrapped.Error.Code, wrapped.Error.Message
		e.SafeAt, _ = time.Parse(time.RFC3339, wrapped.Error.SafeAt)
	} else if bytes.Contains(data, []byte("HTTP request to an HTTPS server")) {
		// Go's TLS server answering a plain HTTP request.
		e.Code, e.Message = "plain_http_to_https", "keyd answers HTTPS at this address: use https:// in the address (KEYD_ADDR), with KEYD_CA_FILE for a private CA"
	}
	if secs, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil {
		e.retryAfter = time.Duration(secs) * time.Second
	}
	return e
}

func keysetPath(keyset, rest string) string { return "/v1/keysets/" + url.PathEscape(keyset) + rest }

func ttlString(ttl time.Duration) string {
	if ttl == 0 {
		return ""
	}
	return ttl.String()
}

// Sign signs claims (anything that encodes as a JSON object) with the key
// set's active key; ttl 0 is the key set's token_ttl.
func (c *Client) Sign(ctx context.Context, keyset string, claims any, ttl time.Duration) (*Token, error) {
	var out Token
	err := c.do(ctx, "POST", keysetPath(keyset, "/sign"), map[string]any{"claims": claims, "ttl": ttlString(ttl)}, &out)
	return &out, err
}

// SignItem is one token of a batch.
type SignItem struct {
	Claims any           `json:"claims"`
	TTL    time.Duration `json:"-"`
}

// SignBatch signs up to 1,000 tokens with the same active key; each
// result is a token or that item's own problem.
func (c *Client) SignBatch(ctx context.Context, keyset string, items []SignItem) ([]BatchResult, error) {
	type item struct {
		Claims any    `json:"claims"`
		TTL    string `json:"ttl,omitempty"`
	}
	in := struct {
		Items []item `json:"items"`
	}{Items: make([]item, len(items))}
	for i, it := range items {
		in.Items[i] = item{Claims: it.Claims, TTL: ttlString(it.TTL)}
	}
	var out struct {
		Results []BatchResult `json:"results"`
	}
	err := c.do(ctx, "POST", keysetPath(keyset, "/sign-batch"), in, &out)
	return out.Results, err
}

// VerifyOptions narrow what a verification requires (see docs/api.md).
type VerifyOptions struct {
	Audience       []string `json:"audience,omitempty"`
	Issuer         string   `json:"issuer,omitempty"`
	Subject        string   `json:"subject,omitempty"`
	Typ            string   `json:"typ,omitempty"`
	RequiredClaims []string `json:"required_claims,omitempty"`
}

// Verify asks keyd whether token is valid for the key set. An invalid
// token is an answer (Valid false, Code says why), not an error.
func (c *Client) Verify(ctx context.Context, keyset, token string, o VerifyOptions) (*Verification, error) {
	in := struct {
		Token string `json:"token"`
		VerifyOptions
	}{token, o}
	var out Verification
	err := c.do(ctx, "POST", keysetPath(keyset, "/verify"), in, &out)
	return &out, err
}

// TokenPair starts a login: an access token and a refresh token.
func (c *Client) TokenPair(ctx context.Context, keyset string, claims any) (*Pair, error) {
	var out Pair
	err := c.do(ctx, "POST", keysetPath(keyset, "/token-pair"), map[string]any{"claims": claims}, &out)
	return &out, err
}

// Refresh spends a refresh token for a new pair.
func (c *Client) Refresh(ctx context.Context, keyset, refreshToken string) (*Pair, error) {
	var out Pair
	err := c.do(ctx, "POST", keysetPath(keyset, "/refresh"), map[string]string{"refresh_token": refreshToken}, &out)
	return &out, err
}

// Import is a key to import: exactly one of PEM, JWK, JWKS, Secret (the
// bytes the old signer used) or SecretBase64. State is retired (the
// default: verify-only), pending or active (with Force).
type Import struct {
	PEM          string          `json:"pem,omitempty"`
	JWK          json.RawMessage `json:"jwk,omitempty"`
	JWKS         json.RawMessage `json:"jwks,omitempty"`
	Secret       string          `json:"secret,omitempty"`
	SecretBase64 string          `json:"secret_base64,omitempty"`
	KID          string          `json:"kid,omitempty"`
	State        string          `json:"state,omitempty"`
	VerifyUntil  time.Time       `json:"verify_until,omitzero"`
	Force        bool            `json:"force,omitempty"`
}

// ImportKey imports keys made outside keyd into a key set (admin).
func (c *Client) ImportKey(ctx context.Context, keyset string, in Import) (*ImportResult, error) {
	var out ImportResult
	err := c.do(ctx, "POST", keysetPath(keyset, "/keys/import"), in, &out)
	return &out, err
}

// KeySets lists the key sets (admin).
func (c *Client) KeySets(ctx context.Context) ([]KeySet, error) {
	var out struct {
		KeySets []KeySet `json:"keysets"`
	}
	err := c.do(ctx, "GET", "/v1/keysets", nil, &out)
	return out.KeySets, err
}

// KeySet shows one key set (admin).
func (c *Client) KeySet(ctx context.Context, keyset string) (*KeySet, error) {
	var out KeySet
	err := c.do(ctx, "GET", keysetPath(keyset, ""), nil, &out)
	return &out, err
}

// Rotate rotates the key set now (admin); force overrides
// rotation_too_early (an emergency: cached JWKS may lack the new key).
func (c *Client) Rotate(ctx context.Context, keyset string, force bool) (*KeySet, error) {
	var out KeySet
	err := c.do(ctx, "POST", keysetPath(keyset, "/rotate"), map[string]bool{"force": force}, &out)
	return &out, err
}

// RevokeKey withdraws a key at once (admin).
func (c *Client) RevokeKey(ctx context.Context, keyset, kid string) (*KeySet, error) {
	var out KeySet
	err := c.do(ctx, "POST", keysetPath(keyset, "/keys/"+url.PathEscape(kid)+"/revoke"), nil, &out)
	return &out, err
}

// Revocation names what RevokeTokens revokes: a Token, a JTI with its Exp,
// or every token of a Sub issued until now.
type Revocation struct {
	Token string `json:"token,omitempty"`
	JTI   string `json:"jti,omitempty"`
	Exp   int64  `json:"exp,omitempty"`
	Sub   string `json:"sub,omitempty"`
	// RefreshToken names one login (any of its refresh tokens) to end.
	RefreshToken string `json:"refresh_token,omitempty"`
	Reason       string `json:"reason,omitempty"`
}

// RevocationResult says what was revoked and how many revocations the key
// set has in force.
type RevocationResult struct {
	Revoked map[string]any `json:"revoked"`
	InForce int            `json:"in_force"`
}

// RevokeTokens revokes tokens before they expire (admin).
func (c *Client) RevokeTokens(ctx context.Context, keyset string, r Revocation) (*RevocationResult, error) {
	var out RevocationResult
	err := c.do(ctx, "POST", keysetPath(keyset, "/revocations"), r, &out)
	return &out, err
}

// RevocationImport is the answer of ImportRevocations.
type RevocationImport struct {
	Imported int `json:"imported"`
	Expired  int `json:"expired"`
	Refused  int `json:"refused"`
	Errors   []struct {
		Line  int    `json:"line"`
		Error string `json:"error"`
	} `json:"errors"`
	InForce int `json:"in_force"`
}

// ImportRevocations sends a denylist, one JSON object a line ({"jti",
// "exp"} or {"sub", "before"}), read from lines as it is sent (admin). It
// is not retried (the body is a stream) and not bounded by the client's
// timeout but by ctx: a million lines take a while. Running it again is
// harmless.
func (c *Client) ImportRevocations(ctx context.Context, keyset string, lines io.Reader) (*RevocationImport, error) {
	resp, err := c.stream(ctx, keysetPath(keyset, "/revocations:import"), "application/x-ndjson", lines)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, err
	}
	var out RevocationImport
	if err := json.Unmarshal(data, &out); err != nil {
		return nil, fmt.Errorf("keyd answered the import with something else than expected: %w", err)
	}
	return &out, nil
}

// stream POSTs body to path, neither retried (the body is read as it is
// sent) nor bounded by the client's timeout but by ctx (long transfers:
// imports, backups); an error answer is returned as an *Error, a success
// is the caller's to read and close.
func (c *Client) stream(ctx context.Context, path, contentType string, body io.Reader) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, "POST", c.base+path, body)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", contentType)
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	hc := *c.http
	hc.Timeout = 0
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("cannot reach keyd at %s: %w", c.base, err)
	}
	if resp.StatusCode >= 300 {
		defer resp.Body.Close()
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		return nil, apiError(resp, data)
	}
	return resp, nil
}

// Revocations lists the revocations in force (admin).
func (c *Client) Revocations(ctx context.Context, keyset string) (*Revocations, error) {
	var out Revocations
	err := c.do(ctx, "GET", keysetPath(keyset, "/revocations"), nil, &out)
	return &out, err
}

// Reload makes keyd re-read its config file (admin).
func (c *Client) Reload(ctx context.Context) error {
	return c.do(ctx, "POST", "/v1/reload", nil, nil)
}

// Readiness is /readyz's answer.
type Readiness struct {
	Status string `json:"status"` // starting, ready or degraded
	Store  string `json:"store"`
	Reason string `json:"reason,omitempty"`
	// Detail is the store's own error, shown to admin callers only.
	Detail string `json:"detail,omitempty"`
	// Scheduled backups (backup.schedule): "ok" or "failing", when the last
	// was written, and why the last attempt failed (admin callers only).
	Backup       string `json:"backup,omitempty"`
	LastBackup   string `json:"last_backup,omitempty"`
	BackupDetail string `json:"backup_detail,omitempty"`
}

// Ready reads /readyz; a keyd still starting answers Status "starting",
// not an error.
func (c *Client) Ready(ctx context.Context) (*Readiness, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", c.base+"/readyz", nil)
	if err != nil {
		return nil, err
	}
	if c.token != "" { // an admin token also gets the store's own error
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("cannot reach keyd at %s: %w", c.base, err)
	}
	defer resp.Body.Close()
	var out Readiness
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&out); err != nil {
		return nil, fmt.Errorf("/readyz: %w", err)
	}
	return &out, nil
}
