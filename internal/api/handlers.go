package api

import (
	"errors"
	"net/http"
	"time"

	"github.com/keyd-dev/keyd/jwks"
	"github.com/keyd-dev/keyd/keystore"
	"github.com/keyd-dev/keyd/signer"
)

func (s *server) healthz(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// readyz is 503 until the key sets are loaded. After that it stays 200
// while the store is unavailable, because keyd keeps signing and serving
// the JWKS from memory (a 503 would take every replica out of a load
// balancer during a store outage); the body says "degraded" and why.
func (s *server) readyz(w http.ResponseWriter, _ *http.Request) {
	started, storeErr := s.Health()
	switch {
	case !started:
		reason := "loading key sets"
		if storeErr != nil {
			reason = storeErr.Error()
		}
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "starting", "store": "unavailable", "reason": reason})
	case storeErr != nil:
		writeJSON(w, http.StatusOK, map[string]string{"status": "degraded", "store": "unavailable", "reason": storeErr.Error()})
	default:
		writeJSON(w, http.StatusOK, map[string]string{"status": "ready", "store": "ok"})
	}
}

func (s *server) jwksAll(w http.ResponseWriter, r *http.Request) {
	jwks.Write(w, r, s.JWKS.All())
}

func (s *server) jwksKeySet(w http.ResponseWriter, r *http.Request) {
	doc, ok := s.JWKS.KeySet(r.PathValue("name"))
	if !ok {
		writeError(w, errorf(http.StatusNotFound, "keyset_not_found", "unknown key set %q", r.PathValue("name")))
		return
	}
	jwks.Write(w, r, doc)
}

type signRequest struct {
	Claims map[string]any `json:"claims"`
	TTL    string         `json:"ttl"`
}

type signResponse struct {
	Token     string    `json:"token"`
	KID       string    `json:"kid"`
	Alg       string    `json:"alg"`
	ExpiresAt time.Time `json:"expires_at"`
}

func (s *server) sign(w http.ResponseWriter, r *http.Request) {
	var req signRequest
	if err := decode(w, r, &req, false); err != nil {
		s.fail(w, r, err)
		return
	}
	var ttl time.Duration
	if req.TTL != "" {
		var err error
		if ttl, err = time.ParseDuration(req.TTL); err != nil {
			s.fail(w, r, errorf(http.StatusBadRequest, "bad_request", "ttl %q is not a duration such as \"5m\" or \"90s\"", req.TTL))
			return
		}
		if ttl <= 0 {
			s.fail(w, r, errorf(http.StatusBadRequest, "bad_request", "ttl must be positive"))
			return
		}
	}
	tok, err := s.Signer.Sign(r.PathValue("name"), req.Claims, ttl)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, signResponse{Token: tok.Token, KID: tok.KID, Alg: string(tok.Alg), ExpiresAt: tok.ExpiresAt})
}

type verifyRequest struct {
	Token string `json:"token"`
}

type verifyResponse struct {
	Valid  bool           `json:"valid"`
	Claims map[string]any `json:"claims,omitempty"`
	KID    string         `json:"kid,omitempty"`
	Error  string         `json:"error,omitempty"`
}

func (s *server) verify(w http.ResponseWriter, r *http.Request) {
	var req verifyRequest
	if err := decode(w, r, &req, false); err != nil {
		s.fail(w, r, err)
		return
	}
	if req.Token == "" {
		s.fail(w, r, errorf(http.StatusBadRequest, "bad_request", "token is required"))
		return
	}
	name := r.PathValue("name")
	v, err := s.Signer.Verify(name, req.Token)
	if errors.Is(err, signer.ErrInvalidToken) {
		// An invalid token is an answer, not an error: 200 either way.
		writeJSON(w, http.StatusOK, verifyResponse{Valid: false, Error: err.Error()})
		return
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, verifyResponse{Valid: true, Claims: v.Claims, KID: v.KID})
}

// KeySetView is what the admin API shows of a key set: settings, states
// and timestamps, never key material. The CLI decodes it too.
type KeySetView struct {
	Name       string    `json:"name"`
	Algorithm  string    `json:"algorithm"`
	Rotation   string    `json:"rotation"`
	TokenTTL   string    `json:"token_ttl"`
	JWKSMaxAge string    `json:"jwks_max_age"`
	Leeway     string    `json:"leeway"`
	Issuer     string    `json:"issuer,omitempty"`
	RotatedAt  time.Time `json:"rotated_at"`
	// NextRotation is when the scheduler will rotate next: the schedule's
	// next time, or later if the pending key is still too young then.
	NextRotation time.Time `json:"next_rotation"`
	Version      uint64    `json:"version"`
	Keys         []KeyView `json:"keys"`
}

// KeyView is one key in a KeySetView.
type KeyView struct {
	KID         string    `json:"kid"`
	Alg         string    `json:"alg"`
	State       string    `json:"state"`
	Published   bool      `json:"published"`
	CreatedAt   time.Time `json:"created_at"`
	ActivatedAt time.Time `json:"activated_at,omitzero"`
	RetiredAt   time.Time `json:"retired_at,omitzero"`
	RevokedAt   time.Time `json:"revoked_at,omitzero"`
	DestroyAt   time.Time `json:"destroy_at,omitzero"`
}

func (s *server) viewOf(ks *keystore.KeySet, p keystore.Policy) KeySetView {
	v := viewOf(ks, p)
	v.NextRotation, _ = s.Manager.NextRotation(ks.Name)
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
			DestroyAt: keystore.DestroyAt(k, p.Grace()),
		})
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
		s.Logger.Warn("forced rotation requested", "keyset", name, "caller", callerName(r))
	}
	ks, err := s.Manager.Rotate(r.Context(), name, req.Force)
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
	s.Logger.Warn("revocation requested", "keyset", name, "kid", kid, "caller", callerName(r))
	ks, err := s.Manager.Revoke(r.Context(), name, kid)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	_, p, _ := s.Manager.KeySet(name)
	writeJSON(w, http.StatusOK, s.viewOf(ks, p))
}

func callerName(r *http.Request) string {
	if p, ok := r.Context().Value(principalKey{}).(*Principal); ok {
		return p.Name
	}
	return ""
}
