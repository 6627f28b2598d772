package tokencheck

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

// CaseVariant reports whether name is a registered claim name in another
// case. Registered names are three letters, which makes this cheap enough
// for the signing path.
func CaseVariant(name string) bool {
	if len(name) != 3 {
		return false
	}
	lower := strings.ToLower(name)
	return lower != name && registeredClaims[lower]
}

// DecodeObject walks the members of one JSON object, refusing what keyd
// refuses wherever it reads claims: invalid UTF-8, a member given twice, a
// registered claim name in another case.
func DecodeObject(raw []byte, member func(name string, dec *json.Decoder) error) error {
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
		case CaseVariant(name):
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
