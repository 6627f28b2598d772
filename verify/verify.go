// Package verify verifies keyd's tokens inside a Go service, without a call
// to keyd per token, with the same rules and the same error codes as keyd's
// verify endpoint:
//
//	v, err := verify.New(ctx, "https://keys.internal", "default", verify.Options{
//		Algorithm: "ES256", Audience: []string{"billing"}, Issuer: "https://keys.internal"})
//	claims, err := v.Verify(ctx, token) // tokencheck.Code(err): "token_expired", ...
//	http.Handle("/api/", v.Middleware(api))
//
// The key set's JWKS is fetched and cached by jwx's jwk.Cache, which
// refetches as the JWKS's Cache-Control max-age says (its own default floor
// of 15 minutes is lowered here: keyd publishes a new key jwks_max_age
// before it signs, so a verifier must not cache longer than that). The key
// set's signed revocation list is fetched whole once, then kept up with
// deltas (?since=) at the same interval, each verified through the same
// JWKS, and consulted for every token.
package verify

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lestrrat-go/httprc/v3"
	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jws"

	"github.com/keyd-dev/keyd/tokencheck"
)

// Options set what a token must satisfy, as the verify endpoint's request
// and the key set's verify policy do.
type Options struct {
	// Algorithm is the key set's algorithm; every other alg is refused
	// (algorithm_not_allowed). Required.
	Algorithm      string
	Audience       []string // aud must contain one of these
	Issuer         string
	Subject        string
	Type           string // the header's typ, e.g. at+jwt
	RequiredClaims []string
	// Leeway for exp, nbf and iat; zero means keyd's default of a minute,
	// NoLeeway none.
	Leeway time.Duration
	// SkipRevocations does not fetch the revocation list (HMAC key sets
	// have none: verify their tokens through keyd).
	SkipRevocations bool
	// LegacyKID and LegacyUntil mirror the key set's legacy setting: a
	// token without a kid verifies with that key alone, until then (with
	// LegacyAllowMissingExp, also without exp).
	LegacyKID             string
	LegacyUntil           time.Time
	LegacyAllowMissingExp bool
	HTTPClient            *http.Client
	Now                   func() time.Time
}

// NoLeeway as Options.Leeway allows no clock skew.
const NoLeeway = time.Duration(-1)

// Verifier verifies one key set's tokens.
type Verifier struct {
	o       Options
	alg     jwa.SignatureAlgorithm
	cache   *jwk.Cache
	jwks    *httprc.ResourceBase[jwk.Set] // the cache's entry: read without a round trip to its goroutine
	keys    atomic.Pointer[keyring]       // the JWKS's keys, exported once per JWKS fetched
	jwksURL string
	listURL string
	hc      *http.Client

	fetchMu sync.Mutex // one fetch of the list at a time
	mu      sync.RWMutex
	revs    *tokencheck.Revoked // nil until the first list (always with SkipRevocations)
	listIat int64               // of the list held: the since of the next fetch
	listExp int64
	maxAge  time.Duration // the list's Cache-Control max-age
	pruned  time.Time     // when expired tokens were last dropped
	fetches atomic.Int64  // lists fetched: whole ones and deltas
	deltas  atomic.Int64  // of which deltas
}

// StartTimeout bounds how long New waits for the first JWKS and
// revocation list when ctx has no earlier deadline.
const StartTimeout = 15 * time.Second

// New returns a Verifier of the key set called keyset at the keyd at
// keydURL, and waits until its JWKS (and revocation list) are fetched, at
// most StartTimeout (or until ctx's deadline): it never blocks forever. The
// cache keeps refreshing them until ctx is cancelled.
func New(ctx context.Context, keydURL, keyset string, o Options) (*Verifier, error) {
	alg, ok := jwa.LookupSignatureAlgorithm(o.Algorithm)
	if !ok || o.Algorithm == "none" || o.Algorithm == "" {
		return nil, fmt.Errorf("verify: Options.Algorithm %q is not a signature algorithm", o.Algorithm)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	switch o.Leeway {
	case 0:
		o.Leeway = time.Minute
	case NoLeeway:
		o.Leeway = 0
	}
	hc := o.HTTPClient
	if hc == nil {
		hc = &http.Client{Timeout: 10 * time.Second}
	}
	base := strings.TrimRight(keydURL, "/") + "/v1/keysets/" + keyset
	v := &Verifier{o: o, alg: alg, jwksURL: base + "/jwks.json"}
	rc := httprc.NewClient(httprc.WithWhitelist(httprc.NewInsecureWhitelist()))
	cache, err := jwk.NewCache(ctx, rc)
	if err != nil {
		return nil, err
	}
	v.cache = cache
	// The first fetches are waited for, but never forever: ctx's deadline,
	// or StartTimeout. The cache itself lives as long as ctx.
	waitCtx, cancel := context.WithTimeout(ctx, StartTimeout)
	defer cancel()
	if err := cache.Register(waitCtx, v.jwksURL, jwk.WithMinInterval(time.Second), jwk.WithMaxInterval(time.Hour),
		jwk.WithHTTPClient(hc), jwk.WithWaitReady(true)); err != nil {
		return nil, fmt.Errorf("verify: the JWKS at %s cannot be fetched (is keyd running there, and the key set called %q?): %w", v.jwksURL, keyset, err)
	}
	if v.jwks, err = cache.LookupResource(waitCtx, v.jwksURL); err != nil {
		return nil, fmt.Errorf("verify: %w", err)
	}
	if !o.SkipRevocations {
		v.listURL, v.hc = base+"/revocations.jwt", hc
		// The first list, retried until the deadline (keyd may be
		// starting); then it is kept fresh in the background.
		for {
			err := v.Refresh(waitCtx)
			if err == nil {
				break
			}
			select {
			case <-waitCtx.Done():
				return nil, fmt.Errorf("verify: fetching the revocation list %s: %w", v.listURL, err)
			case <-time.After(250 * time.Millisecond):
			}
		}
		go v.poll(ctx)
	}
	return v, nil
}

// poll keeps the revocation list fresh: a delta every max-age (the
// list's Cache-Control, jwks_max_age), sooner after a failure, until ctx
// is done.
func (v *Verifier) poll(ctx context.Context) {
	var failed bool
	for {
		v.mu.RLock()
		wait := v.maxAge
		v.mu.RUnlock()
		if failed {
			wait = min(wait, 5*time.Second)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(max(wait, time.Second)):
		}
		failed = v.Refresh(ctx) != nil
	}
}

// Refresh fetches the revocation list now: the changes since the list
// held (a delta, ?since=), or the whole list when none is held yet, when
// the delta's sub_key differs (keyd rotated its key) or keyd answers with
// the whole list. Each is verified through the JWKS before it is believed;
// on any failure the list held stays. The Verifier refreshes by itself;
// call it to pick up a revocation at once.
func (v *Verifier) Refresh(ctx context.Context) error {
	v.fetchMu.Lock()
	defer v.fetchMu.Unlock()
	v.mu.RLock()
	since := v.listIat
	v.mu.RUnlock()
	err := v.fetch(ctx, since)
	if errors.Is(err, errNewEpoch) {
		err = v.fetch(ctx, 0)
	}
	return err
}

var errNewEpoch = errors.New("the delta is of another sub_key: fetch the whole list")

// ErrListRollback means a revocation list was refused because it is older
// than the one held, or a delta that leaves a gap: the list held stays.
var ErrListRollback = errors.New("revocation list refused: older than the list held")

func (v *Verifier) fetch(ctx context.Context, since int64) error {
	url := v.listURL
	if since > 0 {
		url += "?since=" + strconv.FormatInt(since, 10)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := v.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxListBytes))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s answered %s", url, resp.Status)
	}
	l, err := v.verifyList(ctx, raw)
	if err != nil {
		return fmt.Errorf("the revocation list does not verify: %w", err)
	}
	v.fetches.Add(1)
	subKey, err := base64.RawURLEncoding.DecodeString(l.SubKey)
	if err != nil || len(subKey) == 0 {
		return errors.New("the revocation list's sub_key is missing or not base64url")
	}
	v.mu.RLock()
	held := v.listIat
	v.mu.RUnlock()
	switch {
	case l.IssuedAt < held:
		// A replay (a proxy, or a CDN that ignores ?since=, serving an
		// older list): believing it would make revoked tokens valid again.
		return fmt.Errorf("%w: it was issued at %d, before the list held (%d)", ErrListRollback, l.IssuedAt, held)
	case l.Since > held:
		return fmt.Errorf("%w: a delta since %d does not reach back to the list held (%d)", ErrListRollback, l.Since, held)
	}
	maxAge := time.Minute
	if m := maxAgeRE.FindStringSubmatch(resp.Header.Get("Cache-Control")); m != nil {
		n, _ := strconv.Atoi(m[1])
		maxAge = time.Duration(n) * time.Second
	}
	if l.Since == 0 {
		// The whole list: built aside, then swapped in, so that
		// verifications go on while a million entries are read.
		rv := &tokencheck.Revoked{Tokens: map[[tokencheck.RevocationDigestSize]byte]int64{}, Subjects: map[string]int64{}, SubjectKey: subKey}
		if err := addList(rv, l); err != nil {
			return err
		}
		v.mu.Lock()
		defer v.mu.Unlock()
		v.revs, v.listIat, v.listExp, v.maxAge = rv, l.IssuedAt, l.Expires, maxAge
		return nil
	}
	// A delta: added to the list held, of the same sub_key.
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.revs == nil || !bytes.Equal(v.revs.SubjectKey, subKey) {
		return errNewEpoch
	}
	v.deltas.Add(1)
	if now := v.o.Now(); now.Sub(v.pruned) > 10*time.Minute {
		v.prune()
		v.pruned = now
	}
	if err := addList(v.revs, l); err != nil {
		return err
	}
	v.listIat, v.listExp, v.maxAge = l.IssuedAt, l.Expires, maxAge
	return nil
}

// addList adds a list's tokens and subjects to rv, each with the later of
// its expiries or cut-offs.
func addList(rv *tokencheck.Revoked, l *tokencheck.RevocationListClaims) error {
	if err := tokencheck.RevokedTokens(l.Tokens, func(d [tokencheck.RevocationDigestSize]byte, exp int64) { rv.Tokens[d] = max(rv.Tokens[d], exp) }); err != nil {
		return err
	}
	for _, s := range l.Subjects {
		rv.Subjects[s.SubHMAC] = max(rv.Subjects[s.SubHMAC], s.Before)
	}
	return nil
}

// maxListBytes bounds a revocation list read: 1,000,000 revoked tokens
// take 21 MB.
const maxListBytes = 256 << 20

var maxAgeRE = regexp.MustCompile(`max-age=(\d+)`)

// prune drops the tokens that have expired (beyond the leeway): a list
// kept up by deltas would otherwise grow for ever. It runs every ten
// minutes at most (a pass over a million entries holds verifications for
// tens of milliseconds). Callers hold v.mu.
func (v *Verifier) prune() {
	now := v.o.Now().Add(-v.o.Leeway).Unix()
	for d, exp := range v.revs.Tokens {
		if exp < now {
			delete(v.revs.Tokens, d)
		}
	}
}

// verifyList checks a list's signature through the JWKS (refreshed once
// if it does not know the kid yet) and its claims.
func (v *Verifier) verifyList(ctx context.Context, raw []byte) (*tokencheck.RevocationListClaims, error) {
	set, err := v.cache.Lookup(ctx, v.jwksURL)
	if err != nil {
		return nil, err
	}
	payload, err := jws.Verify(raw, jws.WithKeySet(set, jws.WithRequireKid(true)))
	if err != nil {
		if set, err = v.cache.Refresh(ctx, v.jwksURL); err != nil {
			return nil, err
		}
		if payload, err = jws.Verify(raw, jws.WithKeySet(set, jws.WithRequireKid(true))); err != nil {
			return nil, err
		}
	}
	var l tokencheck.RevocationListClaims
	if err := json.Unmarshal(payload, &l); err != nil {
		return nil, err
	}
	switch {
	case l.Audience != tokencheck.RevocationListAudience:
		return nil, errors.New("it is not a revocation list")
	case l.Format != tokencheck.RevocationListFormat:
		return nil, fmt.Errorf("it is of format %d; this package reads %d", l.Format, tokencheck.RevocationListFormat)
	case v.o.Now().Unix() > l.Expires:
		return nil, errors.New("it has expired")
	}
	return &l, nil
}

// Stats counts the revocation lists fetched, and how many were deltas.
func (v *Verifier) Stats() (fetched, deltas int64) { return v.fetches.Load(), v.deltas.Load() }

// Verify checks token as keyd's verify endpoint does, in the same order,
// and returns its claims, or an error whose tokencheck.Code is one of keyd's
// verification codes.
func (v *Verifier) Verify(ctx context.Context, token string) (map[string]any, error) {
	keys, err := v.keyring()
	if err != nil {
		return nil, err
	}
	want := tokencheck.Expect{Audience: v.o.Audience, Issuer: v.o.Issuer, Subject: v.o.Subject, Type: v.o.Type, RequiredClaims: v.o.RequiredClaims}
	now := v.o.Now()
	if v.o.LegacyKID != "" && now.Before(v.o.LegacyUntil) {
		want.LegacyKID, want.AllowMissingExp = v.o.LegacyKID, v.o.LegacyAllowMissingExp
	}
	verified, err := tokencheck.Check(token, v.alg, keys.key, now, v.o.Leeway, want, v.checkRevoked)
	if err != nil {
		return nil, err
	}
	return verified.Claims, nil
}

// keyring holds the keys of one JWKS the cache fetched, exported from
// their JWK form once: verifying reads them without a lock.
type keyring struct {
	set  jwk.Set
	keys map[string]any // kid -> public key
}

func (k *keyring) key(kid string) (any, bool) {
	key, ok := k.keys[kid]
	return key, ok
}

// keyring returns the keys of the JWKS the cache holds now, exporting
// them when the cache has fetched a new one since the last call.
func (v *Verifier) keyring() (*keyring, error) {
	set := v.jwks.Resource()
	if set == nil {
		return nil, errors.New("verify: the JWKS is not available")
	}
	if held := v.keys.Load(); held != nil && held.set == set {
		return held, nil
	}
	k := &keyring{set: set, keys: make(map[string]any, set.Len())}
	for i := range set.Len() {
		jk, _ := set.Key(i)
		kid, ok := jk.KeyID()
		var raw any
		if !ok || jwk.Export(jk, &raw) != nil {
			continue // a key without a kid, or of no type Go knows, verifies nothing
		}
		k.keys[kid] = raw
	}
	v.keys.Store(k)
	return k, nil
}

// checkRevoked consults the revocation list held.
func (v *Verifier) checkRevoked(claims map[string]any) error {
	if v.o.SkipRevocations {
		return nil
	}
	v.mu.RLock()
	defer v.mu.RUnlock()
	if v.revs == nil {
		return errors.New("verify: no revocation list yet")
	}
	if v.o.Now().Unix() > v.listExp {
		return errors.New("verify: the revocation list has expired: keyd has not been reachable for a while")
	}
	return v.revs.Check(claims)
}

type claimsKey struct{}

// Claims returns the verified claims Middleware put in the request's
// context.
func Claims(ctx context.Context) (map[string]any, bool) {
	c, ok := ctx.Value(claimsKey{}).(map[string]any)
	return c, ok
}

// Middleware lets through requests whose Authorization: Bearer token
// verifies, with its claims in the context (Claims), and answers the others
// 401 with the code: {"error": {"code": "token_expired", "message": ...}}
// and a WWW-Authenticate header (RFC 6750).
func (v *Verifier) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		scheme, token, _ := strings.Cut(r.Header.Get("Authorization"), " ")
		if !strings.EqualFold(scheme, "Bearer") || token == "" {
			unauthorized(w, "missing_token", "an Authorization: Bearer token is required")
			return
		}
		claims, err := v.Verify(r.Context(), strings.TrimSpace(token))
		if code := tokencheck.Code(err); code != "" {
			unauthorized(w, code, err.Error())
			return
		}
		if err != nil { // the JWKS or the list cannot be had: not the caller's fault
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusServiceUnavailable)
			_ = json.NewEncoder(w).Encode(map[string]any{"error": map[string]string{"code": "verifier_unavailable", "message": "tokens cannot be verified right now"}})
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), claimsKey{}, claims)))
	})
}

func unauthorized(w http.ResponseWriter, code, msg string) {
	w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer error="invalid_token", error_description=%q`, code))
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusUnauthorized)
	_ = json.NewEncoder(w).Encode(map[string]any{"error": map[string]string{"code": code, "message": msg}})
}
