package api

import (
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/keyd-dev/keyd/audit"
	"github.com/keyd-dev/keyd/jwks"
	"github.com/keyd-dev/keyd/refresh"
	"github.com/keyd-dev/keyd/rotation"
	"github.com/keyd-dev/keyd/signer"
	"github.com/keyd-dev/keyd/tokenstate"
)

// revokeRequest names what to revoke: one token by jti and exp, one token
// given whole, every token and login of a subject, or one login by any of
// its refresh tokens.
type revokeRequest struct {
	JTI          string      `json:"jti"`
	Exp          json.Number `json:"exp"`
	Token        string      `json:"token"`
	Sub          string      `json:"sub"`
	RefreshToken string      `json:"refresh_token"`
	Reason       string      `json:"reason"`
}

const maxReason = 256

// The revocation listing shows the newest entries: a million in force
// would be a response of a hundred megabytes.
const (
	defaultListLimit = 1000
	maxListLimit     = 100_000
)

func (s *server) addRevocation(w http.ResponseWriter, r *http.Request) {
	var req revokeRequest
	if err := decode(w, r, &req, false); err != nil {
		s.fail(w, r, err)
		return
	}
	name := r.PathValue("name")
	ks, p, err := s.Manager.KeySet(name)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	given := 0
	for _, set := range []bool{req.JTI != "" || req.Exp != "", req.Token != "", req.Sub != "", req.RefreshToken != ""} {
		if set {
			given++
		}
	}
	switch {
	case given != 1:
		s.fail(w, r, errorf("bad_request", `give exactly one of {"jti", "exp"}, {"token"}, {"sub"} or {"refresh_token"}`))
		return
	case len(req.Reason) > maxReason:
		s.fail(w, r, errorf("bad_request", "reason is longer than %d bytes", maxReason))
		return
	}
	ctx := rotation.WithActor(r.Context(), caller(r))
	now := s.Manager.Now()
	if req.Sub != "" {
		// Its access tokens, then its logins: a refresh after this answers
		// refresh_token_revoked. A failure between the two is an error
		// answer, and the request may be repeated (both steps keep the
		// later cut-off); meanwhile refresh consults the access tokens'
		// revocation too.
		before, err := s.Manager.RevokeSubject(ctx, name, req.Sub, req.Reason)
		if err == nil && s.Refresh != nil {
			err = s.Refresh.RevokeSubject(ctx, name, req.Sub, before)
		}
		if err != nil {
			s.fail(w, r, err)
			return
		}
		s.writeRevocations(w, r, name, map[string]any{"sub": req.Sub, "issued_before": before})
		return
	}
	if req.RefreshToken != "" {
		s.revokeLogin(w, r, name, req)
		return
	}
	jti, exp := req.JTI, time.Time{}
	if req.Token != "" {
		// Only a token keyd would accept may be listed, so nobody can fill
		// the list with junk.
		v, err := s.Signer.Inspect(name, req.Token)
		switch {
		case signer.Code(err) == signer.CodeRevoked:
			s.writeRevocations(w, r, name, map[string]any{"already": "revoked"})
			return
		case errors.Is(err, signer.ErrInvalidToken):
			s.fail(w, r, errorf("invalid_token", "the token does not verify (%s: %s); only a valid token can be revoked", signer.Code(err), err.Error()))
			return
		case err != nil:
			s.fail(w, r, err)
			return
		}
		var ok bool
		if jti, ok = v.Claims["jti"].(string); !ok || jti == "" {
			s.fail(w, r, errorf("bad_request", "the token has no jti: revoke its subject or its key instead"))
			return
		}
		exp = p.TokensEndBy(ks, now) // a token without exp (legacy.allow_missing_exp): as long as such tokens verify
		if n, ok := v.Claims["exp"].(json.Number); ok {
			secs, _ := n.Float64() // verified: a number
			exp = time.Unix(int64(secs), 0)
		}
	} else {
		secs, err := strconv.ParseInt(req.Exp.String(), 10, 64)
		switch {
		case jti == "" || req.Exp == "":
			s.fail(w, r, errorf("bad_request", "jti and exp go together"))
			return
		case err != nil:
			s.fail(w, r, errorf("bad_request", "exp must be the token's exp, whole seconds since the epoch"))
			return
		}
		exp = time.Unix(secs, 0)
		if exp.Add(p.Leeway).Before(now) {
			s.fail(w, r, errorf("bad_request", "exp %s has passed: the token is expired already", exp.UTC().Format(time.RFC3339)))
			return
		}
		if end := p.TokensEndBy(ks, now); exp.After(end.Add(p.Leeway)) {
			s.fail(w, r, errorf("bad_request", "exp %s is beyond token_ttl from now and every longer window of this key set (imported keys' verify_until, legacy.until): no token it verifies lives past %s", exp.UTC().Format(time.RFC3339), end.UTC().Format(time.RFC3339)))
			return
		}
	}
	if _, err := s.Manager.RevokeToken(ctx, name, jti, exp, req.Reason); err != nil {
		s.fail(w, r, err)
		return
	}
	s.writeRevocations(w, r, name, map[string]any{"jti": jti, "exp": exp.UTC()})
}

// revokeLogin ends one login, named by any of its refresh tokens.
func (s *server) revokeLogin(w http.ResponseWriter, r *http.Request, name string, req revokeRequest) {
	if s.Refresh == nil {
		s.fail(w, r, refresh.ErrDisabled)
		return
	}
	login, err := s.Refresh.RevokeLogin(r.Context(), name, req.RefreshToken)
	if errors.Is(err, refresh.ErrInvalid) {
		s.fail(w, r, errorf("invalid_token", "%s", err.Error()))
		return
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.Logger.Info("revoked a refresh login", "keyset", name, "caller", caller(r))
	s.Audit.Note(audit.Record{Event: audit.EventLoginRevoked, KeySet: name, Caller: caller(r), Remote: r.RemoteAddr, Reason: req.Reason})
	s.writeRevocations(w, r, name, map[string]any{"login": login.ID, "sub": login.Subject, "logged_in_at": login.LoggedInAt})
}

// writeRevocations answers what was revoked and how many revocations the
// key set has in force now.
func (s *server) writeRevocations(w http.ResponseWriter, r *http.Request, name string, revoked map[string]any) {
	writeJSON(w, http.StatusOK, map[string]any{"revoked": revoked, "in_force": s.Manager.Revocations().Len(name)})
}

func (s *server) listRevocations(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	_, p, err := s.Manager.KeySet(name)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	limit := defaultListLimit
	if q := r.URL.Query().Get("limit"); q != "" {
		n, err := strconv.Atoi(q)
		if err != nil || n < 1 || n > maxListLimit {
			s.fail(w, r, errorf("bad_request", "limit must be 1 to %d", maxListLimit))
			return
		}
		limit = n
	}
	tokens, subjects := s.Manager.Revocations().Entries(name, s.Manager.Now())
	v := RevocationView{KeySet: name, Tokens: []RevokedTokenView{}, Subjects: []RevokedSubjectView{}, InForce: len(tokens) + len(subjects)}
	// The newest first, up to limit of each kind.
	newest := func(a, b tokenstate.Revocation) int { return b.RevokedAt.Compare(a.RevokedAt) }
	slices.SortFunc(tokens, newest)
	slices.SortFunc(subjects, newest)
	if len(tokens) > limit || len(subjects) > limit {
		v.Truncated = true
		tokens, subjects = tokens[:min(limit, len(tokens))], subjects[:min(limit, len(subjects))]
	}
	for _, t := range tokens {
		v.Tokens = append(v.Tokens, RevokedTokenView{JTI: t.JTI, Exp: t.Expires.Add(-p.Leeway), RevokedAt: t.RevokedAt, Reason: t.Reason})
	}
	for _, sr := range subjects {
		v.Subjects = append(v.Subjects, RevokedSubjectView{Sub: sr.Subject, IssuedBefore: sr.Before, Until: sr.Expires, RevokedAt: sr.RevokedAt, Reason: sr.Reason})
	}
	writeJSON(w, http.StatusOK, v)
}

// revocationList serves the key set's signed revocation list, cacheable
// like the JWKS: the whole list, or with ?since=IAT (the iat of the list
// the caller holds) the changes since.
func (s *server) revocationList(w http.ResponseWriter, r *http.Request) {
	var since int64
	if q := r.URL.Query().Get("since"); q != "" {
		var err error
		if since, err = strconv.ParseInt(q, 10, 64); err != nil || since <= 0 {
			writeError(w, errorf("bad_request", "since must be the iat (Unix seconds) of the revocation list you hold, got %q", signer.Clip(q)))
			return
		}
	}
	doc, err := s.Signer.RevocationList(r.PathValue("name"), since)
	if errors.Is(err, signer.ErrNoRevocationList) {
		writeError(w, errorf("not_found", "%s", err.Error()))
		return
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	jwks.WriteAs(w, r, doc, "application/jwt")
}
