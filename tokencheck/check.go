package tokencheck

import (
	"crypto/hmac"
	"encoding/base64"
	"encoding/json"
	"errors"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jws/jwsbb"
)

var b64 = base64.RawURLEncoding

// MAC computes an HMAC with a secret held elsewhere (a custody): Check
// compares it in constant time. keystore.MAC is one.
type MAC interface {
	Sum(input []byte) ([]byte, error)
}

// Verified is the result of a successful verification.
type Verified struct {
	KID    string
	Claims map[string]any
	// ClaimsJSON is the token's claims as it carries them: one JSON
	// object, checked as strictly as Claims was decoded, for answers that
	// echo them without encoding the map again.
	ClaimsJSON []byte
	// Legacy: the token had no kid and verified with the legacy key.
	Legacy bool
}

// Expect is what a verification requires of a token beyond a valid
// signature and lifetime: the verify request's policy, already merged with
// the key set's defaults (keystore.VerifyPolicy.Narrow, on keyd's side).
type Expect struct {
	Audience       []string // the token's aud must contain one of these
	Issuer         string
	Subject        string
	Type           string   // the header's typ, compared case-insensitively
	RequiredClaims []string // names that must be present (exp always is)
	// LegacyKID, when set, is the one key a token without a kid is
	// verified with (an imported key whose signer wrote none); with
	// AllowMissingExp such a token may also lack exp. A token that carries
	// a kid is never affected. The keyring sets both from the key set's
	// legacy settings while they are in force.
	LegacyKID       string
	AllowMissingExp bool
}

// Check verifies a compact token by keyd's rules, in keyd's order, so that
// a forged token learns nothing of its claims: structure (one compact JWS
// signature, JSON claims), algorithm (exactly alg), key (key looks the kid
// up among the keys that still verify), signature, the claims
// (CheckClaims, with leeway), the header's typ, and last revoked (nil:
// none). It is the one implementation of those rules: the verify endpoint
// and the verify package both call it. Failures are *Error values wrapping
// ErrInvalidToken with a Code and, once the kid was read, the KID.
func Check(token string, alg jwa.SignatureAlgorithm, key func(kid string) (any, bool), now time.Time, leeway time.Duration,
	want Expect, revoked func(claims map[string]any) error) (_ *Verified, err error) {
	var kid string
	defer func() {
		var e *Error
		if kid != "" && errors.As(err, &e) {
			e.KID = kid
		}
	}()
	if !compactJWS(token) {
		return nil, rejected(CodeMalformed, "malformed token: not a compact JWS (three base64url segments)")
	}
	p := split(token)
	hdr, err := p.header()
	if err != nil {
		return nil, rejected(CodeMalformed, "malformed token: the header is not one JSON object")
	}
	if hdr.Alg != alg.String() {
		return nil, rejected(CodeAlgorithm, "algorithm %q is not accepted (the key set signs with %s)", clip(hdr.Alg), alg)
	}
	kid = hdr.KID
	legacy := false
	if kid == "" && want.LegacyKID != "" { // no kid, or an empty one
		kid, legacy = want.LegacyKID, true
	}
	if len(kid) > maxKID {
		// Nobody's key: answer and record a clipped copy, never the
		// attacker's whole string.
		kid = clip(kid)
		return nil, rejected(CodeUnknownKey, "unknown key id %q", kid)
	}
	k, ok := key(kid)
	if !ok {
		return nil, rejected(CodeUnknownKey, "unknown or revoked key id %q", kid)
	}
	if err := verifySignature(p, hdr, alg, k); err != nil {
		return nil, err
	}
	payload, err := p.payload()
	if err != nil {
		return nil, rejected(CodeMalformed, "malformed token: the payload is not base64url")
	}
	// keyd's revocation list is signed by the same key and carries the
	// key set's iss: it is never a token, unless its type is asked for.
	if strings.EqualFold(hdr.Typ, RevocationListType) && !strings.EqualFold(want.Type, RevocationListType) {
		return nil, rejected(CodeType, "this is keyd's revocation list (typ %q), not a token", RevocationListType)
	}
	claims, err := decodeVerifiedClaims(payload)
	if err != nil {
		return nil, rejected(CodeMalformed, "malformed token: the claims: %s", err.Error())
	}
	claimRules := want
	claimRules.AllowMissingExp = legacy && want.AllowMissingExp
	if err := CheckClaims(claims, now, leeway, claimRules); err != nil {
		return nil, err
	}
	if want.Type != "" && !strings.EqualFold(hdr.Typ, want.Type) {
		return nil, rejected(CodeType, "typ %q is not %q", clip(hdr.Typ), want.Type)
	}
	if revoked != nil {
		if err := revoked(claims); err != nil {
			return nil, err
		}
	}
	return &Verified{KID: kid, Claims: claims, ClaimsJSON: payload, Legacy: legacy}, nil
}

// Revoked is a set of revoked tokens as a verifier holds it from a
// revocation list: tokens by the RevocationDigest of their jti (with their
// exp, Unix seconds, to drop them when they expire), and per subject a
// cut-off (Unix seconds: tokens of that subject with an iat at or before
// it are revoked).
type Revoked struct {
	Tokens   map[[RevocationDigestSize]byte]int64
	Subjects map[string]int64
	// SubjectKey, when set, means Subjects are keyed by SubjectMAC(key,
	// sub), as a published revocation list names them, not by sub.
	SubjectKey []byte
}

// Check returns a token_revoked *Error when claims are those of a revoked
// token: its jti is listed, or its subject is, with the token's iat at or
// before the cut-off (a token without iat cannot show it came later, so
// it is revoked too). A nil Revoked revokes nothing.
func (rv *Revoked) Check(claims map[string]any) error {
	if rv == nil {
		return nil
	}
	if jti, ok := claims["jti"].(string); ok && len(rv.Tokens) > 0 {
		if _, revoked := rv.Tokens[RevocationDigest(jti)]; revoked {
			return rejected(CodeRevoked, "the token has been revoked")
		}
	}
	sub, ok := claims["sub"].(string)
	if !ok || len(rv.Subjects) == 0 {
		return nil
	}
	if rv.SubjectKey != nil {
		sub = SubjectMAC(rv.SubjectKey, sub)
	}
	if before, revoked := rv.Subjects[sub]; revoked {
		n, isNum := claims["iat"].(json.Number)
		iat, err := n.Float64()
		if !isNum || err != nil || iat <= float64(before) {
			return rejected(CodeRevoked, "every token of this subject issued until %s has been revoked", time.Unix(before, 0).UTC().Format(time.RFC3339))
		}
	}
	return nil
}

// CheckClaims applies keyd's claim rules, in their fixed order, to claims
// decoded with numbers as json.Number: required claims (exp always), exp,
// nbf and iat with leeway, iss, aud, sub. The verify package uses it too,
// so local verification applies exactly the verify endpoint's rules.
func CheckClaims(claims map[string]any, now time.Time, leeway time.Duration, want Expect) error {
	required := want.RequiredClaims
	if _, hasExp := claims["exp"]; !hasExp && !want.AllowMissingExp {
		required = append([]string{"exp"}, required...)
	}
	for _, name := range required {
		if _, ok := claims[name]; !ok {
			return rejected(CodeMissingClaim, "the token has no %s claim", name)
		}
	}
	secs := func(name string) (float64, bool, error) {
		raw, ok := claims[name]
		if !ok {
			return 0, false, nil
		}
		n, isNum := raw.(json.Number)
		f, err := n.Float64()
		if !isNum || err != nil || math.IsInf(f, 0) {
			return 0, true, rejected(CodeMalformed, "the %s claim is not a NumericDate", name)
		}
		return f, true, nil
	}
	t := float64(now.UnixNano()) / 1e9
	lw := leeway.Seconds()
	exp, hasExp, err := secs("exp")
	if err != nil {
		return err
	}
	if hasExp && exp <= t-lw {
		return rejected(CodeExpired, "token expired at %s", unix(exp))
	}
	if nbf, ok, err := secs("nbf"); err != nil {
		return err
	} else if ok && nbf > t+lw {
		return rejected(CodeNotYetValid, "token not valid before %s (nbf)", unix(nbf))
	}
	if iat, ok, err := secs("iat"); err != nil {
		return err
	} else if ok && iat > t+lw {
		return rejected(CodeIssuedInFuture, "token issued in the future, at %s (iat)", unix(iat))
	}
	if want.Issuer != "" {
		if iss, _ := claims["iss"].(string); iss != want.Issuer {
			return rejected(CodeIssuer, "iss is not %q", want.Issuer)
		}
	}
	if len(want.Audience) > 0 {
		auds, ok := audiences(claims["aud"])
		if !ok || !slices.ContainsFunc(auds, func(a string) bool { return slices.Contains(want.Audience, a) }) {
			return rejected(CodeAudience, "aud does not contain any of %q", want.Audience)
		}
	}
	if want.Subject != "" {
		if sub, _ := claims["sub"].(string); sub != want.Subject {
			return rejected(CodeSubject, "sub is not %q", want.Subject)
		}
	}
	return nil
}

// audiences reads aud: a string or a list of strings (RFC 7519 4.1.3).
func audiences(v any) ([]string, bool) {
	switch a := v.(type) {
	case string:
		return []string{a}, true
	case []any:
		out := make([]string, 0, len(a))
		for _, x := range a {
			s, ok := x.(string)
			if !ok {
				return nil, false
			}
			out = append(out, s)
		}
		return out, true
	}
	return nil, false
}

func unix(secs float64) string {
	return time.Unix(int64(secs), 0).UTC().Format(time.RFC3339)
}

// maxKID is the longest kid a verification looks up; keyd's kids are RFC
// 7638 thumbprints (43 characters) or imported ones.
const maxKID = 256

// compactJWS reports whether token has the compact serialization's shape:
// three segments of base64url characters (an empty signature, as alg
// "none" has, is left to the algorithm check). The JSON serialization,
// with unprotected headers keyd never issues, is refused here.
func compactJWS(token string) bool {
	dots := 0
	for i := 0; i < len(token); i++ {
		switch c := token[i]; {
		case c == '.':
			dots++
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '_':
		default:
			return false
		}
	}
	return dots == 2
}

// verifySignature checks the signature over the signing input with k:
// an HMAC secret held by a custody (its MAC compared here in constant
// time; a custody that does not answer is an error of its own, not a bad
// token), or a key jwx's building blocks verify with (jwsbb: the same
// code jws.Verify runs, without parsing the token again).
func verifySignature(p parts, hdr header, alg jwa.SignatureAlgorithm, k any) error {
	if hdr.Extension {
		return rejected(CodeSignature, "invalid signature")
	}
	sig, err := p.signature()
	if err != nil {
		return rejected(CodeSignature, "invalid signature")
	}
	if m, ok := k.(MAC); ok {
		want, err := m.Sum(p.signingInput())
		if err != nil {
			return err
		}
		if !hmac.Equal(sig, want) {
			return rejected(CodeSignature, "invalid signature")
		}
		return nil
	}
	if err := jwsbb.Verify(k, alg.String(), p.signingInput(), sig); err != nil {
		return rejected(CodeSignature, "invalid signature")
	}
	return nil
}
