package signer

import (
	"encoding/json"
	"strings"

	"github.com/keyd-dev/keyd/tokencheck"
)

// MaxJTI caps a caller-given jti, which is kept in revocation lists and
// audit records.
const MaxJTI = 256

// checkClaimNames refuses claims to sign that carry a registered claim name
// in another case.
func checkClaimNames(claims Claims) error {
	for name := range claims {
		if tokencheck.CaseVariant(name) {
			return invalid("claim %q is the registered claim %q in another case: verifiers read only %q", clip(name), strings.ToLower(name), strings.ToLower(name))
		}
	}
	if raw, given := claims["jti"]; given && len(raw) > MaxJTI+2 {
		return invalid("claims.jti is longer than %d bytes", MaxJTI)
	}
	return nil
}

// DecodeClaims decodes a claims set strictly: one JSON object, valid UTF-8,
// no member given twice, no registered claim name in another case. The
// members are kept as given.
func DecodeClaims(raw []byte) (Claims, error) {
	out := Claims{}
	err := tokencheck.DecodeObject(raw, func(name string, dec *json.Decoder) error {
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return err
		}
		out[name] = v
		return nil
	})
	return out, err
}

// Clip shortens an attacker-supplied string for an error message or a
// record.
func Clip(s string) string { return tokencheck.Clip(s) }

func clip(s string) string { return tokencheck.Clip(s) }
