package api

import (
	"bytes"
	"encoding/pem"
	"net/http"
	"strings"

	"github.com/keyd-dev/keyd/jwks"
)

// keyPEM serves one published key as a PKIX PEM (KID.pem), or its X.509
// certificate chain (KID.crt, key sets with certificates), public and
// cached like the JWKS: for verifiers that take a static key rather than a
// JWKS (nginx and Envoy JWT filters, PyJWT with a key, older Java stacks)
// and for trust stores.
func (s *server) keyPEM(w http.ResponseWriter, r *http.Request) {
	name, file := r.PathValue("name"), r.PathValue("file")
	kid, chain := strings.CutSuffix(file, ".crt")
	if !chain {
		var ok bool
		if kid, ok = strings.CutSuffix(file, ".pem"); !ok {
			writeError(w, errorf("not_found", "no such path: a key's PEM is at /v1/keysets/%s/keys/KID.pem, its certificate chain at KID.crt", name))
			return
		}
	}
	ks, p, err := s.Manager.KeySet(name)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if chain {
		k, ok := ks.Key(kid)
		if !ok || !k.Published() || len(k.Certificate) == 0 || p.Certificates == nil {
			writeError(w, errorf("certificate_not_found", "key set %s has no certificate for key %q (keysets[].certificates gives published keys one)", name, kid))
			return
		}
		var out bytes.Buffer
		for _, der := range p.Certificates.Chain(k.Certificate) {
			_ = pem.Encode(&out, &pem.Block{Type: "CERTIFICATE", Bytes: der})
		}
		jwks.WriteAs(w, r, jwks.NewDocument(out.Bytes(), p.JWKSMaxAge), "application/x-pem-file")
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
	writeError(w, errorf("key_not_found", "key set %s publishes no key %q (HMAC key sets publish none)", name, kid))
}
