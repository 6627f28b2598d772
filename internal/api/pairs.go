package api

import (
	"errors"
	"net/http"
	"time"

	"github.com/keyd-dev/keyd/audit"
	"github.com/keyd-dev/keyd/refresh"
	"github.com/keyd-dev/keyd/signer"
)

type pairRequest struct {
	Claims signer.Claims `json:"claims"`
}

type refreshRequest struct {
	RefreshToken string `json:"refresh_token"`
}

// tokenPair starts a login: an access token and the first refresh token.
func (s *server) tokenPair(w http.ResponseWriter, r *http.Request) {
	var req pairRequest
	if err := decode(w, r, &req, false); err != nil {
		s.fail(w, r, err)
		return
	}
	name := r.PathValue("name")
	p, err := s.Refresh.Issue(r.Context(), name, req.Claims)
	s.answerPair(w, r, name, req.Claims, p, err)
}

// refresh spends a refresh token for a new pair.
func (s *server) refresh(w http.ResponseWriter, r *http.Request) {
	var req refreshRequest
	if err := decode(w, r, &req, false); err != nil {
		s.fail(w, r, err)
		return
	}
	if req.RefreshToken == "" {
		s.fail(w, r, errorf("bad_request", "refresh_token is required"))
		return
	}
	name := r.PathValue("name")
	p, err := s.Refresh.Refresh(r.Context(), name, req.RefreshToken)
	if errors.Is(err, refresh.ErrReused) {
		s.Logger.Warn("refresh token reuse: every refresh token of that login is revoked", "keyset", name, "caller", caller(r))
		s.Audit.Note(audit.Record{Event: audit.EventRefreshReused, KeySet: name, Caller: caller(r), Remote: r.RemoteAddr})
	}
	var claims signer.Claims
	if p != nil {
		claims = p.Claims
	}
	s.answerPair(w, r, name, claims, p, err)
}

func (s *server) answerPair(w http.ResponseWriter, r *http.Request, name string, claims signer.Claims, p *refresh.Pair, err error) {
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if s.Audit != nil {
		if err := s.Audit.Record(signedRecord(w, r, name, claims, p.Access)); err != nil {
			s.fail(w, r, err)
			return
		}
	}
	issued := p.Access.IssuedAt // whole seconds, as iat
	writeJSON(w, http.StatusOK, PairResponse{
		AccessToken: p.Access.Token, RefreshToken: p.RefreshToken, TokenType: "Bearer",
		ExpiresIn:        int64(p.Access.ExpiresAt.Sub(issued) / time.Second),
		RefreshExpiresIn: int64(p.RefreshExpires.Sub(issued) / time.Second),
	})
}
