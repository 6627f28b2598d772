package signer

import (
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"slices"
	"strings"
	"time"
)

// SignSegment signs a claims segment exactly as a caller encoded it
// (base64url JSON, as kube-apiserver builds service account tokens) with
// the key set's active key: it returns the encoded protected header
// ({"alg","kid","typ":"JWT"}, nothing else), the encoded signature and
// the kid. keyd adds or checks no claim: the caller owns them.
func (s *Signer) SignSegment(name, claims string) (header, signature, kid string, err error) {
	r, err := s.ring(name)
	if err != nil {
		return "", "", "", err
	}
	if _, err := base64.RawURLEncoding.DecodeString(claims); err != nil || claims == "" {
		r.obs.SignFailed("bad_request")
		return "", "", "", invalid("the claims segment is not base64url (unpadded)")
	}
	input := len(r.header) + 1 + len(claims)
	buf := make([]byte, 0, input+1+b64.EncodedLen(r.sigSize))
	buf, err = r.seal(append(append(append(buf, r.header...), '.'), claims...))
	if err != nil {
		r.obs.SignFailed("internal")
		return "", "", "", err
	}
	r.obs.Signed()
	return string(r.header), string(buf[input+1:]), r.kid, nil
}

// PublicKey is a key that verifies a key set's tokens, PKIX DER.
type PublicKey struct {
	KID  string
	PKIX []byte
}

// PublicKeys returns the public keys that verify the key set's tokens
// (pending, active and retired; never revoked), sorted by kid, and when
// the key set was last loaded. HMAC key sets have none.
func (s *Signer) PublicKeys(name string) ([]PublicKey, time.Time, error) {
	r, err := s.ring(name)
	if err != nil {
		return nil, time.Time{}, err
	}
	if r.alg.Symmetric() {
		return nil, r.loadedAt, nil
	}
	var out []PublicKey
	for kid, pub := range r.verify {
		der, err := x509.MarshalPKIXPublicKey(pub)
		if err != nil {
			return nil, time.Time{}, fmt.Errorf("%w: key %s: %v", ErrInternal, kid, err)
		}
		out = append(out, PublicKey{KID: kid, PKIX: der})
	}
	slices.SortFunc(out, func(a, b PublicKey) int { return strings.Compare(a.KID, b.KID) })
	return out, r.loadedAt, nil
}
