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
	HTTPClient      *http.Client
	Now             func() time.Time
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

type revocations struct {
	raw  []byte
	jtis map[string]struct{}
	subs map[string]int64 // SHA-256 of sub -> iat cut-off
}

// New returns a Verifier of the key set called keyset at the keyd at
// keydURL, and waits until its JWKS (and revocation list) are fetched. The
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
	if err := cache.Register(ctx, v.jwksURL, jwk.WithMinInterval(time.Second), jwk.WithMaxInterval(time.Hour),
		jwk.WithHTTPClient(hc), jwk.WithWaitReady(true)); err != nil {
		return nil, fmt.Errorf("verify: fetching %s: %w", v.jwksURL, err)
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
		if err := ctrl.Add(ctx, res, httprc.WithWaitReady(true)); err != nil {
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
	msg, err := jws.Parse([]byte(token))
	if err != nil || len(msg.Signatures()) != 1 || strings.Count(token, ".") != 2 {
		return nil, reject(signer.CodeMalformed, "malformed token: not a compact JWS with one signature")
	}
	hdr := msg.Signatures()[0].ProtectedHeaders()
	if alg, _ := hdr.Algorithm(); alg.String() != v.alg.String() {
		return nil, reject(signer.CodeAlgorithm, "algorithm %q is not accepted (the key set signs with %s)", alg.String(), v.alg)
	}
	kid, _ := hdr.KeyID()
	key, ok := set.LookupKeyID(kid)
	if !ok {
		return nil, reject(signer.CodeUnknownKey, "unknown or revoked key id %q", kid)
	}
	payload, err := jws.Verify([]byte(token), jws.WithKey(v.alg, key))
	if err != nil {
		return nil, reject(signer.CodeSignature, "invalid signature")
	}
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.UseNumber()
	var claims map[string]any
	if err := dec.Decode(&claims); err != nil || claims == nil {
		return nil, reject(signer.CodeMalformed, "the claims are not a JSON object")
	}
	want := signer.Expect{Audience: v.o.Audience, Issuer: v.o.Issuer, Subject: v.o.Subject, RequiredClaims: v.o.RequiredClaims}
	if err := signer.CheckClaims(claims, v.o.Now(), v.o.Leeway, want); err != nil {
		return nil, err
	}
	if v.o.Type != "" {
		if typ, _ := hdr.Type(); !strings.EqualFold(typ, v.o.Type) {
			return nil, reject(signer.CodeType, "typ %q is not %q", typ, v.o.Type)
		}
	}
	if err := v.checkRevoked(ctx, set, claims); err != nil {
		return nil, err
	}
	return claims, nil
}

// checkRevoked consults the cached revocation list, verifying a new copy
// through the JWKS before believing it.
func (v *Verifier) checkRevoked(ctx context.Context, set jwk.Set, claims map[string]any) error {
	if v.revs == nil {
		return nil
	}
	raw := v.revs.Resource()
	r := v.parsed.Load()
	if r == nil || !bytes.Equal(r.raw, raw) {
		var err error
		if r, err = v.parseList(raw, set); err != nil {
			return fmt.Errorf("verify: the revocation list does not verify: %w", err)
		}
		v.parsed.Store(r)
	}
	if jti, ok := claims["jti"].(string); ok {
		if _, revoked := r.jtis[jti]; revoked {
			return reject(signer.CodeRevoked, "the token has been revoked")
		}
	}
	if sub, ok := claims["sub"].(string); ok {
		if before, revoked := r.subs[signer.SubjectHash(sub)]; revoked {
			n, isNum := claims["iat"].(json.Number)
			iat, err := n.Float64()
			if !isNum || err != nil || iat <= float64(before) {
				return reject(signer.CodeRevoked, "every token of this subject issued until %s has been revoked", time.Unix(before, 0).UTC().Format(time.RFC3339))
			}
		}
	}
	return nil
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
		Subjects []struct {
			SubSHA256 string `json:"sub_sha256"`
			Before    int64  `json:"iat_before"`
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
	r := &revocations{raw: raw, jtis: map[string]struct{}{}, subs: map[string]int64{}}
	for _, t := range list.Tokens {
		r.jtis[t.JTI] = struct{}{}
	}
	for _, s := range list.Subjects {
		r.subs[s.SubSHA256] = s.Before
	}
	return r, nil
}

func reject(code, format string, args ...any) error {
	return &signer.Error{Kind: signer.ErrInvalidToken, Code: code, Reason: fmt.Sprintf(format, args...)}
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
