package api

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"net/http"
	"sync"
	"time"

	"github.com/keyd-dev/keyd/audit"
	"github.com/keyd-dev/keyd/client"
	"github.com/keyd-dev/keyd/internal/config"
	"github.com/keyd-dev/keyd/jwks"
	"github.com/keyd-dev/keyd/keystore"
	"github.com/keyd-dev/keyd/rotation"
	"github.com/keyd-dev/keyd/signer"
)

func (s *server) healthz(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// readyz is 503 until the key sets are loaded. After that it stays 200
// while the store is unavailable, because keyd keeps signing and serving
// the JWKS from memory (a 503 would take every replica out of a load
// balancer during a store outage); the body says "degraded" and why.
func (s *server) readyz(w http.ResponseWriter, r *http.Request) {
	started, storeErr := s.Health()
	body := map[string]string{"status": "ready", "store": "ok"}
	// The endpoint is public: the class of a failure for everyone, its own
	// words (addresses, paths) only for admin callers and the log. The
	// caller is authenticated once, and only when there is a failure.
	admin := sync.OnceValue(func() bool {
		p, _ := s.Auth.AuthenticateRequest(r)
		return p != nil && p.Can(config.ScopeAdmin)
	})
	switch {
	case !started:
		body = map[string]string{"status": "starting", "store": "unavailable", "reason": "loading key sets"}
	case storeErr != nil:
		body = map[string]string{"status": "degraded", "store": "unavailable"}
	}
	if storeErr != nil {
		body["reason"] = storeReason(storeErr)
		if admin() {
			body["detail"] = storeErr.Error()
		}
	}
	if s.TokenState != nil && started {
		if err := s.TokenState(r.Context()); err != nil {
			body["status"], body["token_state"] = "degraded", "unavailable"
			body["token_state_reason"] = "the token state (Redis) cannot be reached: revoking and token pairs answer 503 until it is back"
			if admin() {
				body["token_state_detail"] = err.Error()
			}
		}
	}
	if s.Custodies != nil && started {
		if keyset, err := s.Custodies(); err != nil {
			// Signing with that key set fails meanwhile (503
			// custody_unavailable); the rest serves.
			body["status"], body["custody"] = "degraded", "unavailable"
			body["custody_keyset"] = keyset
			if admin() {
				body["custody_detail"] = err.Error()
			}
		}
	}
	if s.LastBackup != nil {
		// Scheduled backups: when the last one was written; a failing one
		// does not make keyd less ready, but says so (why: admin only).
		last, err := s.LastBackup()
		body["backup"], body["last_backup"] = "ok", last.UTC().Format(time.RFC3339)
		if err != nil {
			body["backup"] = "failing"
			if admin() {
				body["backup_detail"] = err.Error()
			}
		}
	}
	status := http.StatusOK
	if !started {
		status = http.StatusServiceUnavailable
	}
	writeJSON(w, status, body)
}

// storeReason classes a store failure in words that reveal nothing of the
// store.
func storeReason(err error) string {
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return "the key store did not answer in time"
	case errors.Is(err, keystore.ErrUnavailable):
		return "the key store cannot be reached"
	}
	return "the key store failed"
}

func (s *server) jwksAll(w http.ResponseWriter, r *http.Request) {
	s.Metrics.JWKSServed(jwks.Write(w, r, s.JWKS.All()))
}

// discovery serves OpenID Connect discovery when issuer_url is set.
func (s *server) discovery(w http.ResponseWriter, r *http.Request) {
	doc, ok := s.JWKS.Discovery()
	if !ok {
		writeError(w, errorf("not_found", "no issuer_url is configured, so there is no discovery document"))
		return
	}
	jwks.Write(w, r, doc)
}

// reload re-reads the config file; a refused config changes nothing and
// the answer says why.
func (s *server) reload(w http.ResponseWriter, r *http.Request) {
	if err := decode(w, r, &struct{}{}, true); err != nil {
		s.fail(w, r, err)
		return
	}
	s.Logger.Info("config reload requested", "caller", caller(r))
	if err := s.Reload(r.Context()); err != nil {
		s.fail(w, r, errorf("reload_refused", "%s", err.Error()))
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "reloaded"})
}

func (s *server) jwksKeySet(w http.ResponseWriter, r *http.Request) {
	doc, ok := s.JWKS.KeySet(r.PathValue("name"))
	if !ok {
		writeError(w, errorf("keyset_not_found", "unknown key set %q", r.PathValue("name")))
		return
	}
	s.Metrics.JWKSServed(jwks.Write(w, r, doc))
}

type signRequest struct {
	Claims signer.Claims `json:"claims"`
	TTL    string        `json:"ttl"`
}

func (s *server) sign(w http.ResponseWriter, r *http.Request) {
	var req signRequest
	if err := decode(w, r, &req, false); err != nil {
		s.fail(w, r, err)
		return
	}
	ttl, err := parseTTL(req.TTL)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	name := r.PathValue("name")
	tok, err := s.Signer.Sign(name, req.Claims, ttl)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	// With audit.required the token is only handed out once its record
	// is on disk.
	if s.Audit != nil {
		if err := s.Audit.Record(signedRecord(w, r, name, req.Claims, tok)); err != nil {
			s.fail(w, r, err)
			return
		}
	}
	writeJSON(w, http.StatusOK, SignResponse{Token: tok.Token, KID: tok.KID, Alg: tok.Alg, ExpiresAt: tok.ExpiresAt})
}

// signedRecord is the audit record of a token handed out: who asked, for
// which subject and audience, never the token or other claim values.
func signedRecord(w http.ResponseWriter, r *http.Request, keyset string, claims signer.Claims, tok *signer.Token) audit.Record {
	return audit.Record{
		Event: audit.EventTokenSigned, KeySet: keyset, KID: tok.KID, JTI: tok.JTI,
		Sub: audit.Claim(claims["sub"]), Aud: audit.Claim(claims["aud"]), Exp: tok.ExpiresAt.Unix(),
		Caller: caller(r), Remote: r.RemoteAddr,
	}
}

// parseTTL reads a request's optional ttl ("5m"); "" is 0, the default.
func parseTTL(s string) (time.Duration, error) {
	if s == "" {
		return 0, nil
	}
	ttl, err := time.ParseDuration(s)
	if err != nil {
		return 0, errorf("bad_request", "ttl %q is not a duration such as \"5m\" or \"90s\"", s)
	}
	if ttl <= 0 {
		return 0, errorf("bad_request", "ttl must be positive")
	}
	return ttl, nil
}

// MaxBatchItems is the most tokens one sign-batch request may ask for.
const MaxBatchItems = 1000

type signBatchRequest struct {
	Items []signRequest `json:"items"`
}

// signBatch signs every item with the same active key; an item that
// cannot be signed gets its own error and the others are still signed.
func (s *server) signBatch(w http.ResponseWriter, r *http.Request) {
	var req signBatchRequest
	if err := decode(w, r, &req, false); err != nil {
		s.fail(w, r, err)
		return
	}
	switch n := len(req.Items); {
	case n == 0:
		s.fail(w, r, errorf("bad_request", "items is required: a list of 1 to %d sign requests", MaxBatchItems))
		return
	case n > MaxBatchItems:
		s.fail(w, r, errorf("bad_request", "%d items exceed the limit of %d per batch", n, MaxBatchItems))
		return
	}
	name := r.PathValue("name")
	batch, err := s.Signer.Batch(name)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	results := make([]BatchResult, len(req.Items))
	tokens := make([]SignResponse, len(req.Items))
	var records []audit.Record
	if s.Audit != nil {
		records = make([]audit.Record, 0, len(req.Items))
	}
	items, at := make([]signer.Item, 0, len(req.Items)), make([]int, 0, len(req.Items))
	for i, item := range req.Items {
		ttl, err := parseTTL(item.TTL)
		if err != nil {
			e := s.problem(r, err)
			results[i].Error = &ErrorBody{Code: e.code, Message: e.message}
			continue
		}
		items, at = append(items, signer.Item{Claims: item.Claims, TTL: ttl}), append(at, i)
	}
	toks, errs := batch.SignAll(items)
	for j, i := range at {
		if errs[j] != nil {
			e := s.problem(r, errs[j])
			results[i].Error = &ErrorBody{Code: e.code, Message: e.message}
			continue
		}
		tok := toks[j]
		tokens[i] = SignResponse{Token: tok.Token, KID: tok.KID, Alg: tok.Alg, ExpiresAt: tok.ExpiresAt}
		results[i].Token = &tokens[i]
		if s.Audit != nil {
			records = append(records, signedRecord(w, r, name, items[j].Claims, tok))
		}
	}
	if err := s.Audit.RecordAll(records...); err != nil { // one write, one sync
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string][]BatchResult{"results": results})
}

type verifyRequest struct {
	Token          string    `json:"token"`
	Audience       stringSet `json:"audience"`
	Issuer         string    `json:"issuer"`
	Subject        string    `json:"subject"`
	Typ            string    `json:"typ"`
	RequiredClaims []string  `json:"required_claims"`
}

// stringSet is a JSON string or list of strings.
type stringSet []string

func (a *stringSet) UnmarshalJSON(b []byte) error {
	var one string
	if err := json.Unmarshal(b, &one); err == nil {
		*a = stringSet{one}
		return nil
	}
	var many []string
	if err := json.Unmarshal(b, &many); err != nil {
		return errors.New("must be a string or a list of strings")
	}
	*a = many
	return nil
}

func (s *server) verify(w http.ResponseWriter, r *http.Request) {
	var req verifyRequest
	if err := decode(w, r, &req, false); err != nil {
		s.fail(w, r, err)
		return
	}
	if req.Token == "" {
		s.fail(w, r, errorf("bad_request", "token is required"))
		return
	}
	name := r.PathValue("name")
	_, p, err := s.Manager.KeySet(name)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	policy, err := p.Verify.Narrow(req.Audience, req.Issuer, req.RequiredClaims)
	if err != nil {
		s.fail(w, r, errorf("bad_request", "%s", err.Error()))
		return
	}
	v, err := s.Signer.Verify(name, req.Token, signer.Expect{
		Audience: policy.Audience, Issuer: policy.Issuer, RequiredClaims: policy.RequiredClaims,
		Subject: req.Subject, Type: req.Typ,
	})
	if errors.Is(err, signer.ErrInvalidToken) {
		s.Audit.Note(audit.Record{Event: audit.EventVerifyFailed, KeySet: name, Reason: signer.Code(err),
			KID: signer.KeyID(err), Caller: caller(r), Remote: r.RemoteAddr})
		// An invalid token is an answer, not an error: 200 either way.
		writeJSON(w, http.StatusOK, verifyResponse{Valid: false, Code: signer.Code(err), Error: err.Error()})
		return
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, verifiedResponse{Valid: true, Claims: v.ClaimsJSON, KID: v.KID})
}

func (s *server) viewOf(ks *keystore.KeySet, p keystore.Policy) KeySetView {
	v := viewOf(ks, p)
	v.NextRotation, _ = s.Manager.NextRotation(ks.Name)
	v.RotationWaitsFor = s.Manager.WaitingFor(ks.Name)
	if l := p.Legacy; l.KID != "" {
		v.Legacy = &client.Legacy{KID: l.KID, Until: l.Until, AllowMissingExp: l.AllowMissingExp, LastVerified: s.Signer.LegacySeen(ks.Name)}
	}
	return v
}

func viewOf(ks *keystore.KeySet, p keystore.Policy) KeySetView {
	v := KeySetView{
		Name: ks.Name, Algorithm: string(ks.Algorithm), Rotation: p.Rotation,
		TokenTTL: p.TokenTTL.String(), JWKSMaxAge: p.JWKSMaxAge.String(), Leeway: p.Leeway.String(),
		Issuer: p.Issuer, RotatedAt: ks.RotatedAt, Version: ks.Version, Keys: []KeyView{},
	}
	for _, k := range ks.Keys {
		v.Keys = append(v.Keys, KeyView{
			KID: k.ID, Alg: string(k.Algorithm), State: string(k.State), Published: k.Published(),
			CreatedAt: k.CreatedAt, ActivatedAt: k.ActivatedAt, RetiredAt: k.RetiredAt, RevokedAt: k.RevokedAt,
			DestroyAt: keystore.DestroyAt(k, p.Grace()), Imported: k.Imported, PublicOnly: k.PublicOnly,
		})
		if c, err := x509.ParseCertificate(k.Certificate); err == nil && p.Certificates != nil {
			v.Keys[len(v.Keys)-1].CertificateExpiresAt = c.NotAfter
		}
	}
	return v
}

func (s *server) listKeySets(w http.ResponseWriter, r *http.Request) {
	out := []KeySetView{}
	for _, name := range s.Manager.Names() {
		ks, p, err := s.Manager.KeySet(name)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		out = append(out, s.viewOf(ks, p))
	}
	writeJSON(w, http.StatusOK, map[string]any{"keysets": out})
}

func (s *server) getKeySet(w http.ResponseWriter, r *http.Request) {
	ks, p, err := s.Manager.KeySet(r.PathValue("name"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, s.viewOf(ks, p))
}

type rotateRequest struct {
	Force bool `json:"force"`
}

func (s *server) rotate(w http.ResponseWriter, r *http.Request) {
	var req rotateRequest
	if err := decode(w, r, &req, true); err != nil {
		s.fail(w, r, err)
		return
	}
	name := r.PathValue("name")
	if req.Force {
		s.Logger.Warn("forced rotation requested", "keyset", name, "caller", caller(r))
	}
	ks, err := s.Manager.Rotate(rotation.WithActor(r.Context(), caller(r)), name, req.Force)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	_, p, _ := s.Manager.KeySet(name)
	writeJSON(w, http.StatusOK, s.viewOf(ks, p))
}

func (s *server) revoke(w http.ResponseWriter, r *http.Request) {
	if err := decode(w, r, &struct{}{}, true); err != nil {
		s.fail(w, r, err)
		return
	}
	name, kid := r.PathValue("name"), r.PathValue("kid")
	s.Logger.Warn("revocation requested", "keyset", name, "kid", kid, "caller", caller(r))
	ks, err := s.Manager.Revoke(rotation.WithActor(r.Context(), caller(r)), name, kid)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	_, p, _ := s.Manager.KeySet(name)
	writeJSON(w, http.StatusOK, s.viewOf(ks, p))
}
