package api

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"time"

	"github.com/keyd-dev/keyd/keyimport"
	"github.com/keyd-dev/keyd/keystore"
	"github.com/keyd-dev/keyd/rotation"
)

// importRequest is a key to import: exactly one of pem, jwk, jwks, secret
// (the bytes of a string, as PyJWT uses a SECRET_KEY) or secret_base64.
type importRequest struct {
	PEM          string          `json:"pem"`
	JWK          json.RawMessage `json:"jwk"`
	JWKS         json.RawMessage `json:"jwks"`
	Secret       string          `json:"secret"`
	SecretBase64 string          `json:"secret_base64"`
	KID          string          `json:"kid"`
	State        string          `json:"state"` // retired (default), pending or active
	VerifyUntil  time.Time       `json:"verify_until"`
	Force        bool            `json:"force"`
}

// importKey imports keys into a key set (admin). The answer is the key set
// as GET shows it, the new keys marked imported, and any warnings.
func (s *server) importKey(w http.ResponseWriter, r *http.Request) {
	var req importRequest
	if err := decode(w, r, &req, false); err != nil {
		s.fail(w, r, err)
		return
	}
	name := r.PathValue("name")
	_, p, err := s.Manager.KeySet(name)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	in := keyimport.Input{PEM: []byte(req.PEM), JWK: req.JWK, JWKS: req.JWKS, Secret: []byte(req.Secret), KID: req.KID, VerifyUntil: req.VerifyUntil}
	if req.SecretBase64 != "" {
		if req.Secret != "" {
			s.fail(w, r, errorf("invalid_key", "give secret or secret_base64, not both"))
			return
		}
		b, err := base64.StdEncoding.DecodeString(req.SecretBase64)
		if err != nil {
			if b, err = base64.RawURLEncoding.DecodeString(req.SecretBase64); err != nil {
				s.fail(w, r, errorf("invalid_key", "secret_base64 is not base64"))
				return
			}
		}
		in.Secret = b
	}
	state := keystore.State(req.State)
	switch state {
	case "":
		state = keystore.StateRetired
	case keystore.StateRetired, keystore.StatePending, keystore.StateActive:
	default:
		s.fail(w, r, errorf("invalid_key", "state %q: want retired (verify-only), pending or active", req.State))
		return
	}
	keys, warnings, err := keyimport.Parse(p.Algorithm, in, s.Manager.Now())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	ctx := rotation.WithActor(r.Context(), caller(r))
	ks, err := s.Manager.Import(ctx, name, keys, state, req.Force)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	for _, warning := range warnings {
		s.Logger.Warn("key import", "keyset", name, "warning", warning)
	}
	if warnings == nil {
		warnings = []string{}
	}
	writeJSON(w, http.StatusOK, ImportView{KeySet: s.viewOf(ks, p), Warnings: warnings})
}
