package api

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"strings"

	"github.com/keyd-dev/keyd/internal/config"
)

// Authenticator checks bearer tokens against the configured SHA-256
// hashes. The daemon never holds the tokens themselves.
type Authenticator struct {
	tokens []Principal
}

// Principal is an authenticated caller: a configured token.
type Principal struct {
	Name   string
	hash   []byte
	scopes map[string]bool
}

// NewAuthenticator builds an Authenticator from validated config tokens.
func NewAuthenticator(tokens []config.Token) *Authenticator {
	a := &Authenticator{}
	for _, t := range tokens {
		h, _ := hex.DecodeString(t.SHA256) // validated by config
		e := Principal{Name: t.Name, hash: h, scopes: map[string]bool{}}
		for _, s := range t.Scopes {
			e.scopes[s] = true
		}
		a.tokens = append(a.tokens, e)
	}
	return a
}

// Authenticate returns the caller presenting the Authorization header, or
// false. It hashes the presented token and compares the hash with every
// configured one in constant time, looking at all of them whatever matches.
func (a *Authenticator) Authenticate(header string) (*Principal, bool) {
	scheme, token, ok := strings.Cut(header, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || token == "" {
		return nil, false
	}
	sum := sha256.Sum256([]byte(strings.TrimSpace(token)))
	var found *Principal
	for i := range a.tokens {
		if subtle.ConstantTimeCompare(sum[:], a.tokens[i].hash) == 1 {
			found = &a.tokens[i]
		}
	}
	return found, found != nil
}

// Can reports whether p holds scope ("admin", or "sign:<keyset>" which
// "sign:*" also grants, likewise verify).
func (p *Principal) Can(scope string) bool {
	if p.scopes[scope] {
		return true
	}
	kind, _, ok := strings.Cut(scope, ":")
	return ok && p.scopes[kind+":*"]
}
