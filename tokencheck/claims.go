package tokencheck

import (
	"strings"
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
