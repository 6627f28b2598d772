package signer

import (
	"crypto/hmac"
	"crypto/rand"
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
	SubKey   string           `json:"sub_key"` // base64url; this list's key for sub_hmac
	Subjects []revokedSubject `json:"revoked_sub"`
}

type revokedToken struct {
	JTI string `json:"jti"`
	Exp int64  `json:"exp"`
}

// revokedSubject names a subject by an HMAC of its sub under the list's own
// random key: the list is public and subjects are user identifiers, and an
// unkeyed hash would let anyone test a guess (an e-mail address) against
// every list at once with a precomputed table.
type revokedSubject struct {
	SubHMAC string `json:"sub_hmac"`
	Before  int64  `json:"iat_before"` // tokens with iat <= this are revoked
}

// SubjectMAC is how a revocation list names a subject: the base64url
// HMAC-SHA256 of its sub under the list's sub_key.
func SubjectMAC(key []byte, sub string) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(sub))
	return b64.EncodeToString(m.Sum(nil))
}

type cachedList struct {
	doc     jwks.Document
	signed  time.Time
	version uint64    // of the index's entries of the key set
	wall    time.Time // when it was signed, by the wall clock
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
	version := r.revs.Version(name)
	fresh := func(c *cachedList) bool {
		age := now.Sub(c.signed)
		// Changed entries are signed in at most every tenth of the cache
		// lifetime (by the wall clock: this guards the CPU): the public
		// endpoint cannot make keyd sign a large list once per request
		// while revocations come in.
		return c != nil && age >= 0 && age < maxAge/2 && (c.version == version || time.Since(c.wall) < max(maxAge/10, time.Second))
	}
	if c := r.list.Load(); c != nil && fresh(c) {
		return c.doc, nil
	}
	r.listMu.Lock() // one signing at a time; the others take its result
	defer r.listMu.Unlock()
	if c := r.list.Load(); c != nil && fresh(c) {
		return c.doc, nil
	}
	tokens, subjects := r.revs.Entries(name, now)
	claims := revocationListClaims{
		Issuer: r.policy.Issuer, Audience: RevocationListAudience, KeySet: name,
		IssuedAt: now.Unix(), Expires: now.Add(2 * maxAge).Unix(),
		Tokens: []revokedToken{}, Subjects: []revokedSubject{},
	}
	subKey := make([]byte, 16)
	_, _ = rand.Read(subKey) // crypto/rand.Read never fails (Go 1.24+)
	claims.SubKey = b64.EncodeToString(subKey)
	for _, t := range tokens {
		claims.Tokens = append(claims.Tokens, revokedToken{t.JTI, t.Expires.Add(-r.policy.Leeway).Unix()})
	}
	for _, sr := range subjects {
		claims.Subjects = append(claims.Subjects, revokedSubject{SubjectMAC(subKey, sr.Subject), sr.Before.Unix()})
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
	r.list.Store(&cachedList{doc: doc, signed: now, version: version, wall: time.Now()})
	return doc, nil
}
