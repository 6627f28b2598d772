package api

import (
	"encoding/pem"
	"net/http"
	"strings"

	"github.com/keyd-dev/keyd/jwks"
)

// keyPEM serves one published key as a PKIX PEM (public, cached like the
// JWKS), for verifiers that take a static key rather than a JWKS: nginx
// and Envoy JWT filters, PyJWT with a key, older Java stacks.
func (s *server) keyPEM(w http.ResponseWriter, r *http.Request) {
	name, file := r.PathValue("name"), r.PathValue("file")
	kid, ok := strings.CutSuffix(file, ".pem")
	if !ok {
		writeError(w, errorf(http.StatusNotFound, "not_found", "no such path: a key's PEM is at /v1/keysets/%s/keys/KID.pem", name))
		return
	}
	_, p, err := s.Manager.KeySet(name)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	keys, _, err := s.Signer.PublicKeys(name)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	for _, k := range keys {
		if k.KID == kid {
			doc := jwks.NewDocument(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: k.PKIX}), p.JWKSMaxAge)
			jwks.WriteAs(w, r, doc, "application/x-pem-file")
			return
		}
	}
	writeError(w, errorf(http.StatusNotFound, "key_not_found", "key set %s publishes no key %q (HMAC key sets publish none)", name, kid))
}
