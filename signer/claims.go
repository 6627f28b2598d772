package signer

import (
	"encoding/json"
	"encoding/json/jsontext"
	"slices"
	"strings"

	"github.com/keyd-dev/keyd/tokencheck"
)

// MaxJTI caps a caller-given jti, which is kept in revocation lists and
// audit records.
const MaxJTI = 256

// checkClaimNames refuses claims to sign that carry a registered claim name
// in another case, or a value holding a member twice (at any depth) or
// invalid UTF-8: keyd signs nothing its own verification would refuse.
func checkClaimNames(claims Claims) error {
	for name, raw := range claims {
		if tokencheck.CaseVariant(name) {
			return invalid("claim %q is the registered claim %q in another case: verifiers read only %q", clip(name), strings.ToLower(name), strings.ToLower(name))
		}
		if !jsontext.Value(raw).IsValid() { // I-JSON: no name twice, valid UTF-8
			return invalid("claim %q is not one JSON value with each member once and valid UTF-8", clip(name))
		}
	}
	if raw, given := claims["jti"]; given && len(raw) > MaxJTI+2 {
		return invalid("claims.jti is longer than %d bytes", MaxJTI)
	}
	return nil
}

// DecodeClaims decodes a claims set as strictly as a verification does
// (tokencheck.DecodeClaims): one JSON object, valid UTF-8, no member given
// twice at any depth, no registered claim name in another case. The
// members are kept as given.
func DecodeClaims(raw []byte) (Claims, error) {
	out := Claims{}
	err := tokencheck.DecodeClaims(raw, func(name string, dec *jsontext.Decoder) error {
		v, err := dec.ReadValue()
		out[name] = json.RawMessage(slices.Clone(v)) // the decoder's buffer is reused
		return err
	})
	return out, err
}

// Clip shortens an attacker-supplied string for an error message or a
// record.
func Clip(s string) string { return tokencheck.Clip(s) }

func clip(s string) string { return tokencheck.Clip(s) }
