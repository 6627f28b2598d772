package signer

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"unicode/utf8"
)

// registeredClaims are RFC 7519's registered claim names, which keyd checks
// and sets: every reader must find exactly these members, so a claims set
// that holds one of them twice, or in another case ("EXP", "Sub"), is
// refused wherever keyd reads claims (signing, verifying, the Kubernetes
// signer). encoding/json matches struct fields case-insensitively and lets
// the last duplicate win; verifiers in other languages do otherwise.
var registeredClaims = map[string]bool{"iss": true, "sub": true, "aud": true, "exp": true, "nbf": true, "iat": true, "jti": true}

// MaxJTI caps a caller-given jti, which is kept in revocation lists and
// audit records.
const MaxJTI = 256

// caseVariant reports whether name is a registered claim name in another
// case. Registered names are three letters, which makes this cheap enough
// for the signing path.
func caseVariant(name string) bool {
	if len(name) != 3 {
		return false
	}
	lower := strings.ToLower(name)
	return lower != name && registeredClaims[lower]
}

// checkClaimNames refuses claims to sign that carry a registered claim name
// in another case.
func checkClaimNames(claims Claims) error {
	for name := range claims {
		if caseVariant(name) {
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
	err := decodeObject(raw, func(name string, dec *json.Decoder) error {
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return err
		}
		out[name] = v
		return nil
	})
	return out, err
}

// decodeVerifiedClaims decodes a verified token's claims as DecodeClaims
// does, with values as Go values and numbers as json.Number.
func decodeVerifiedClaims(raw []byte) (map[string]any, error) {
	out := map[string]any{}
	err := decodeObject(raw, func(name string, dec *json.Decoder) error {
		var v any
		if err := dec.Decode(&v); err != nil {
			return err
		}
		out[name] = v
		return nil
	})
	return out, err
}

// decodeObject walks the members of one JSON object, refusing what
// DecodeClaims refuses.
func decodeObject(raw []byte, member func(name string, dec *json.Decoder) error) error {
	if !utf8.Valid(raw) {
		return fmt.Errorf("the claims are not valid UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return fmt.Errorf("the claims are not a JSON object")
	}
	seen := map[string]bool{}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return fmt.Errorf("the claims are not a JSON object")
		}
		name, _ := t.(string)
		switch {
		case seen[name]:
			return fmt.Errorf("claim %q is given twice", clip(name))
		case caseVariant(name):
			return fmt.Errorf("claim %q is the registered claim %q in another case", clip(name), strings.ToLower(name))
		}
		seen[name] = true
		if err := member(name, dec); err != nil {
			return fmt.Errorf("the claims are not a JSON object")
		}
	}
	if t, err := dec.Token(); err != nil || t != json.Delim('}') {
		return fmt.Errorf("the claims are not a JSON object")
	}
	if _, err := dec.Token(); err != io.EOF {
		return fmt.Errorf("the claims are not one JSON object")
	}
	return nil
}

// Clip shortens an attacker-supplied string for an error message or a
// record.
func Clip(s string) string { return clip(s) }

func clip(s string) string {
	const max = 64
	if len(s) <= max {
		return s
	}
	return strings.ToValidUTF8(s[:max], "") + fmt.Sprintf("... (%d bytes)", len(s))
}
