// Package verify verifies keyd's tokens inside a Go service, without a call
// to keyd per token, with the same rules and the same error codes as keyd's
// verify endpoint:
//
//	v, err := verify.New(ctx, "https://keys.internal", "default", verify.Options{
//		Algorithm: "ES256", Audience: []string{"billing"}, Issuer: "https://keys.internal"})
//	claims, err := v.Verify(ctx, token) // signer.Code(err): "token_expired", ...
//	http.Handle("/api/", v.Middleware(api))
//
// The key set's JWKS is fetched and cached by jwx's jwk.Cache, which
// refetches as the JWKS's Cache-Control max-age says (its own default floor
// of 15 minutes is lowered here: keyd publishes a new key jwks_max_age
// before it signs, so a verifier must not cache longer than that). The key
// set's signed revocation list is cached the same way, verified through
// the same JWKS, and consulted for every token.
package verify

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/lestrrat-go/httprc/v3"
	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jws"

	"github.com/keyd-dev/keyd/signer"
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
	jwksURL string
	revs    *httprc.ResourceBase[[]byte] // nil with SkipRevocations
	parsed  atomic.Pointer[revocations]
}

// revocations is the parsed revocation list and the bytes it came from.
type revocations struct {
	raw     []byte
	revoked *signer.Revoked
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
	if !o.SkipRevocations {
		// The list is no JWKS: a client of its own (jwk.Cache runs its own).
		ctrl, err := httprc.NewClient(httprc.WithWorkers(1), httprc.WithWhitelist(httprc.NewInsecureWhitelist())).Start(ctx)
		if err != nil {
			return nil, err
		}
		res, err := httprc.NewResource[[]byte](base+"/revocations.jwt", httprc.BytesTransformer(),
			httprc.WithMinInterval(time.Second), httprc.WithMaxInterval(time.Hour), httprc.WithHTTPClient(hc))
		if err != nil {
			return nil, err
		}
		if err := ctrl.Add(waitCtx, res, httprc.WithWaitReady(true)); err != nil {
			return nil, fmt.Errorf("verify: fetching the revocation list %s: %w", res.URL(), err)
		}
		v.revs = res
	}
	return v, nil
}

// Verify checks token as keyd's verify endpoint does, in the same order,
// and returns its claims, or an error whose signer.Code is one of keyd's
// verification codes.
func (v *Verifier) Verify(ctx context.Context, token string) (map[string]any, error) {
	set, err := v.cache.Lookup(ctx, v.jwksURL)
	if err != nil {
		return nil, fmt.Errorf("verify: the JWKS is not available: %w", err)
	}
	want := signer.Expect{Audience: v.o.Audience, Issuer: v.o.Issuer, Subject: v.o.Subject, Type: v.o.Type, RequiredClaims: v.o.RequiredClaims}
	now := v.o.Now()
	if v.o.LegacyKID != "" && now.Before(v.o.LegacyUntil) {
		want.LegacyKID, want.AllowMissingExp = v.o.LegacyKID, v.o.LegacyAllowMissingExp
	}
	key := func(kid string) (any, bool) { return set.LookupKeyID(kid) }
	revoked := func(claims map[string]any) error { return v.checkRevoked(set, claims) }
	verified, err := signer.Check(token, v.alg, key, now, v.o.Leeway, want, revoked)
	if err != nil {
		return nil, err
	}
	return verified.Claims, nil
}

// checkRevoked consults the cached revocation list, verifying a new copy
// through the JWKS before believing it.
func (v *Verifier) checkRevoked(set jwk.Set, claims map[string]any) error {
	if v.revs == nil {
		return nil
	}
	raw := v.revs.Resource()
	r := v.parsed.Load()
	switch {
	case r != nil && len(r.raw) == len(raw) && (len(raw) == 0 || &r.raw[0] == &raw[0]):
		// the copy already parsed: no comparison of the whole list per token
	case r != nil && bytes.Equal(r.raw, raw):
		// fetched again, unchanged: keep the parsed list for this copy
		r = &revocations{raw: raw, revoked: r.revoked}
		v.parsed.Store(r)
	default:
		var err error
		if r, err = v.parseList(raw, set); err != nil {
			return fmt.Errorf("verify: the revocation list does not verify: %w", err)
		}
		v.parsed.Store(r)
	}
	return r.revoked.Check(claims)
}

func (v *Verifier) parseList(raw []byte, set jwk.Set) (*revocations, error) {
	payload, err := jws.Verify(raw, jws.WithKeySet(set, jws.WithRequireKid(true)))
	if err != nil {
		return nil, err
	}
	var list struct {
		Audience string `json:"aud"`
		Expires  int64  `json:"exp"`
		Tokens   []struct {
			JTI string `json:"jti"`
		} `json:"revoked_jti"`
		SubKey   string `json:"sub_key"`
		Subjects []struct {
			SubHMAC string `json:"sub_hmac"`
			Before  int64  `json:"iat_before"`
		} `json:"revoked_sub"`
	}
	if err := json.Unmarshal(payload, &list); err != nil {
		return nil, err
	}
	if list.Audience != signer.RevocationListAudience {
		return nil, errors.New("it is not a revocation list")
	}
	if v.o.Now().Unix() > list.Expires {
		return nil, errors.New("it has expired: keyd has not been reachable for a while")
	}
	subKey, err := base64.RawURLEncoding.DecodeString(list.SubKey)
	if err != nil || len(subKey) == 0 {
		return nil, errors.New("its sub_key is missing or not base64url")
	}
	rv := &signer.Revoked{JTIs: map[string]struct{}{}, Subjects: map[string]int64{}, SubjectKey: subKey}
	for _, t := range list.Tokens {
		rv.JTIs[t.JTI] = struct{}{}
	}
	for _, s := range list.Subjects {
		rv.Subjects[s.SubHMAC] = s.Before
	}
	return &revocations{raw: raw, revoked: rv}, nil
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
		if code := signer.Code(err); code != "" {
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
