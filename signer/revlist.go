package signer

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/keyd-dev/keyd/jwks"
	"github.com/keyd-dev/keyd/tokencheck"
	"github.com/keyd-dev/keyd/tokenstate"
)

// The revocation list's wire form (tokencheck, which the verify package
// reads it with).
const (
	RevocationListAudience = tokencheck.RevocationListAudience
	RevocationListType     = tokencheck.RevocationListType
	RevocationListFormat   = tokencheck.RevocationListFormat
	RevocationDigestSize   = tokencheck.RevocationDigestSize
)

type (
	RevokedBatch         = tokencheck.RevokedBatch
	RevocationListClaims = tokencheck.RevocationListClaims
	RevokedSubject       = tokencheck.RevokedSubject
)

// RevocationDigest is how a revocation list names a jti.
func RevocationDigest(jti string) [RevocationDigestSize]byte { return tokencheck.RevocationDigest(jti) }

// RevokedTokens reads a list's revoked_jti (tokencheck.RevokedTokens).
func RevokedTokens(batches []RevokedBatch, add func(digest [RevocationDigestSize]byte, exp int64)) error {
	return tokencheck.RevokedTokens(batches, add)
}

// SubjectMAC is how a revocation list names a subject.
func SubjectMAC(key []byte, sub string) string { return tokencheck.SubjectMAC(key, sub) }

// batches packs tokens' digests by the step their exp (less the leeway:
// the token's own exp) falls in.
func batches(tokens []tokenstate.Revocation, leeway, step time.Duration) []RevokedBatch {
	byExp := map[int64][]byte{}
	sec := int64(step / time.Second)
	for _, t := range tokens {
		exp := t.Expires.Add(-leeway).Unix()
		end := (exp + sec - 1) / sec * sec // the step's end: at or after exp
		d := RevocationDigest(t.JTI)
		byExp[end] = append(byExp[end], d[:]...)
	}
	out := make([]RevokedBatch, 0, len(byExp))
	for _, exp := range slices.Sorted(maps.Keys(byExp)) {
		out = append(out, RevokedBatch{Exp: exp, JTIs: b64.EncodeToString(byExp[exp])})
	}
	return out
}

type cachedList struct {
	doc     jwks.Document
	signed  time.Time
	version uint64    // of the index's entries of the key set
	wall    time.Time // when it was signed, by the wall clock
}

// deltaBuckets is how many deltas a key set keeps signed, by the start of
// what they hold: a since is rounded down to a step of a tenth of
// jwks_max_age, so verifiers that fetched the same list share one delta
// and no caller can make keyd sign one per request.
const deltaBuckets = 256

// RevocationList returns the key set's revocations as a JWT signed by its
// active key, for services that verify tokens locally: they fetch it,
// verify it through the same JWKS, cache it for the document's MaxAge
// (jwks_max_age) and reject listed tokens. With since = 0 it is the whole
// list; with since = the iat of the list a verifier holds it is a delta:
// the entries revoked from a little before since on (the margin covers
// replicas' clocks and publication delay), which the verifier adds to
// its copy. A since beyond the index's horizon gets the whole list. Each
// document, its ETag included, is made when signed, and signed again once
// half its cache lifetime has passed (its exp is two lifetimes after it
// was signed), or when its entries changed, at most every tenth of it.
// HMAC key sets have none: their tokens are verified by keyd, which checks
// revocations itself.
func (s *Signer) RevocationList(name string, since int64) (jwks.Document, error) {
	r, err := s.ring(name)
	if err != nil {
		return jwks.Document{}, err
	}
	if r.alg.Symmetric() {
		return jwks.Document{}, fmt.Errorf("%w: key set %s signs with HMAC: verify its tokens through keyd, which checks revocations", ErrNoRevocationList, name)
	}
	now := s.now()
	maxAge := r.policy.JWKSMaxAge
	var from time.Time // the delta's start; zero: the whole list
	if since > 0 {
		step := max(maxAge/10, time.Second)
		from = time.Unix(min(since, now.Unix()), 0).Add(-r.policy.Leeway - r.policy.PublishDelay).Truncate(step)
	}
	version := r.revs.Version(name)
	fresh := func(c *cachedList) bool {
		age := now.Sub(c.signed)
		// Changed entries are signed in at most every tenth of the cache
		// lifetime (by the wall clock too: this guards the CPU): the
		// public endpoint cannot make keyd sign a large list once per
		// request while revocations come in.
		throttle := max(maxAge/10, time.Second)
		return c != nil && age >= 0 && age < maxAge/2 && (c.version == version || (time.Since(c.wall) < throttle && age < throttle))
	}
	cached := func() *cachedList {
		if from.IsZero() {
			return r.list.Load()
		}
		r.deltaMu.Lock()
		defer r.deltaMu.Unlock()
		return r.deltas[from.Unix()]
	}
	if c := cached(); c != nil && fresh(c) {
		return c.doc, nil
	}
	r.listMu.Lock() // one signing at a time; the others take its result
	defer r.listMu.Unlock()
	if c := cached(); c != nil && fresh(c) {
		return c.doc, nil
	}
	var tokens, subjects []tokenstate.Revocation
	ok := false
	if !from.IsZero() {
		tokens, subjects, ok = r.revs.Since(name, from, now)
	}
	if !ok {
		if c := r.list.Load(); !from.IsZero() && c != nil && fresh(c) {
			return c.doc, nil // beyond the horizon: the whole list, as cached
		}
		from = time.Time{}
		tokens, subjects = r.revs.Entries(name, now)
	}
	claims := RevocationListClaims{
		Format: RevocationListFormat, Issuer: r.policy.Issuer, Audience: RevocationListAudience, KeySet: name,
		IssuedAt: now.Unix(), Expires: now.Add(2 * maxAge).Unix(), SubKey: b64.EncodeToString(r.subKey),
		Subjects: make([]RevokedSubject, 0, len(subjects)),
	}
	if !from.IsZero() {
		claims.Since = from.Unix()
	}
	claims.Tokens = batches(tokens, r.policy.Leeway, max(time.Minute, (r.policy.TokenTTL/60).Truncate(time.Second)))
	for _, sr := range subjects {
		claims.Subjects = append(claims.Subjects, RevokedSubject{SubHMAC: SubjectMAC(r.subKey, sr.Subject), Before: sr.Before.Unix()})
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
	c := &cachedList{doc: jwks.NewDocument(buf, maxAge), signed: now, version: version, wall: time.Now()}
	if from.IsZero() {
		r.list.Store(c)
		return c.doc, nil
	}
	r.deltaMu.Lock()
	defer r.deltaMu.Unlock()
	if len(r.deltas) >= deltaBuckets {
		clear(r.deltas)
	}
	r.deltas[from.Unix()] = c
	return c.doc, nil
}

// listSubjectKey derives the key of a key set's sub_hmac from its active
// key: the same on every replica, unknown to anyone without the key, new
// at each rotation.
func listSubjectKey(material []byte, keyset, kid string) []byte {
	m := hmac.New(sha256.New, material)
	m.Write([]byte("keyd revocation list sub_key\x00" + keyset + "\x00" + kid))
	return m.Sum(nil)[:16]
}
