package signer

import (
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"time"

	"github.com/keyd-dev/keyd/jwks"
)

// RevocationListAudience is the aud of a revocation list, so that no
// verifier that checks aud (every verifier should) takes a list for an
// access token.
const RevocationListAudience = "keyd-revocations"

// RevocationListType is the typ header of a revocation list: keyd's
// verification (the verify endpoint, the verify package) refuses a token
// of this type unless asked for it, so the public list never passes for a
// token, even with a verifier that checks the issuer and not the audience.
const RevocationListType = "revocations+jwt"

// revocationList is what a cached list claims.
type revocationListClaims struct {
	Issuer   string           `json:"iss,omitempty"`
	Audience string           `json:"aud"`
	KeySet   string           `json:"keyset"`
	IssuedAt int64            `json:"iat"`
	Expires  int64            `json:"exp"`
	Tokens   []revokedToken   `json:"revoked_jti"`
	Subjects []revokedSubject `json:"revoked_sub"`
}

type revokedToken struct {
	JTI string `json:"jti"`
	Exp int64  `json:"exp"`
}

// revokedSubject names a subject by the SHA-256 of its sub (base64url):
// the list is public, and subjects are user identifiers.
type revokedSubject struct {
	SubSHA256 string `json:"sub_sha256"`
	Before    int64  `json:"iat_before"` // tokens with iat <= this are revoked
}

// SubjectHash is how a revocation list names a subject: the base64url
// SHA-256 of its sub.
func SubjectHash(sub string) string {
	sum := sha256.Sum256([]byte(sub))
	return b64.EncodeToString(sum[:])
}

type cachedList struct {
	doc    jwks.Document
	signed time.Time
}

// RevocationList returns the key set's revocations as a JWT signed by its
// active key, for services that verify tokens locally: they fetch it,
// verify it through the same JWKS, cache it for the document's MaxAge
// (jwks_max_age) and reject listed tokens. The document, its ETag
// included, is made when the list is signed, and signed again once half
// its cache lifetime has passed (its exp is two lifetimes after it was
// signed). HMAC key sets have none: their tokens are verified by keyd,
// which checks revocations itself.
func (s *Signer) RevocationList(name string) (jwks.Document, error) {
	r, err := s.ring(name)
	if err != nil {
		return jwks.Document{}, err
	}
	if r.alg.Symmetric() {
		return jwks.Document{}, fmt.Errorf("%w: key set %s signs with HMAC: verify its tokens through keyd, which checks revocations", ErrNoRevocationList, name)
	}
	now := s.now()
	maxAge := r.policy.JWKSMaxAge
	if c := r.list.Load(); c != nil && now.Sub(c.signed) < maxAge/2 && !now.Before(c.signed) {
		return c.doc, nil
	}
	in := r.revs.InForce(now, r.policy.Leeway)
	claims := revocationListClaims{
		Issuer: r.policy.Issuer, Audience: RevocationListAudience, KeySet: name,
		IssuedAt: now.Unix(), Expires: now.Add(2 * maxAge).Unix(),
		Tokens: []revokedToken{}, Subjects: []revokedSubject{},
	}
	for _, t := range in.Tokens {
		claims.Tokens = append(claims.Tokens, revokedToken{t.JTI, t.Expires.Unix()})
	}
	for _, sr := range in.Subjects {
		claims.Subjects = append(claims.Subjects, revokedSubject{SubjectHash(sr.Subject), sr.Before.Unix()})
	}
	payload, err := json.Marshal(claims)
	if err != nil {
		return jwks.Document{}, err
	}
	header, _ := json.Marshal(map[string]string{"alg": string(r.alg), "kid": r.kid, "typ": RevocationListType})
	buf := b64.AppendEncode(append(b64.AppendEncode(nil, header), '.'), payload)
	if buf, err = r.seal(buf); err != nil {
		return jwks.Document{}, err
	}
	doc := jwks.NewDocument(buf, maxAge)
	r.list.Store(&cachedList{doc: doc, signed: now})
	return doc, nil
}
