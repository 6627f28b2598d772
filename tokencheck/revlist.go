package tokencheck

import (
	"crypto/hmac"
	"crypto/sha256"
	"fmt"
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

// RevocationListFormat is the v claim of the lists keyd signs: tokens as
// packed digests in batches by expiry (RevokedBatch), subjects as HMACs,
// deltas on ?since=.
const RevocationListFormat = 2

// RevocationDigestSize is the bytes of a jti's digest in a list: the first
// 12 bytes of its SHA-256 (a chance of 2^-96 per token and entry that an
// unrevoked token matches; 1,000,000 entries leave it below 10^-22). Packed
// in base64url, and that again as the JWT's payload, a revoked token costs
// 21.3 bytes on the wire.
const RevocationDigestSize = 12

// RevocationDigest is how a revocation list names a jti.
func RevocationDigest(jti string) [RevocationDigestSize]byte {
	sum := sha256.Sum256([]byte(jti))
	return [RevocationDigestSize]byte(sum[:RevocationDigestSize])
}

// RevokedBatch is the revoked tokens of a list that expire by the same
// time: Exp is the end of a step (a minute, or a sixtieth of token_ttl if
// longer) that every token's exp falls in, so a verifier may drop them all
// after it; JTIs is base64url of their digests, packed.
type RevokedBatch struct {
	Exp  int64  `json:"exp"`
	JTIs string `json:"jti"`
}

// RevokedTokens reads a list's revoked_jti and calls add for each digest
// with the exp of its batch; it fails on anything but whole digests.
func RevokedTokens(batches []RevokedBatch, add func(digest [RevocationDigestSize]byte, exp int64)) error {
	for _, b := range batches {
		raw, err := b64.DecodeString(b.JTIs)
		if err != nil {
			return fmt.Errorf("revoked_jti is not base64url: %w", err)
		}
		if len(raw)%RevocationDigestSize != 0 {
			return fmt.Errorf("revoked_jti holds %d bytes, not whole %d-byte digests", len(raw), RevocationDigestSize)
		}
		for i := 0; i < len(raw); i += RevocationDigestSize {
			add([RevocationDigestSize]byte(raw[i:i+RevocationDigestSize]), b.Exp)
		}
	}
	return nil
}

// RevocationListClaims is what a list claims (format 2): keyd signs them,
// and the verify package reads them.
type RevocationListClaims struct {
	Format   int    `json:"v"`
	Issuer   string `json:"iss,omitempty"`
	Audience string `json:"aud"`
	KeySet   string `json:"keyset"`
	IssuedAt int64  `json:"iat"`
	Expires  int64  `json:"exp"`
	// Since is set on a delta: it holds every entry revoked (or changed)
	// at or after it; a verifier adds them to the list it holds.
	Since    int64            `json:"since,omitempty"`
	Tokens   []RevokedBatch   `json:"revoked_jti"`
	SubKey   string           `json:"sub_key"` // base64url; the key of sub_hmac
	Subjects []RevokedSubject `json:"revoked_sub"`
}

// RevokedSubject names a subject by an HMAC of its sub under the list's
// key: the list is public and subjects are user identifiers, and an
// unkeyed hash would let anyone test a guess (an e-mail address) against
// every list at once with a precomputed table. The key is derived from the
// active signing key, so every replica uses the same one and it changes at
// each rotation (a verifier then fetches the whole list again).
type RevokedSubject struct {
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
