package api

import (
	"crypto/subtle"
	"encoding/hex"
	"net/http"
	"strings"
	"sync/atomic"

	"github.com/keyd-dev/keyd/internal/config"
)

// Authenticator identifies API callers: by a bearer token, checked against
// the configured SHA-256 hashes (keyd never holds the tokens themselves),
// or by a verified TLS client certificate whose URI or DNS SAN names a
// configured client. Update swaps the whole table at once (a reload).
type Authenticator struct {
	table atomic.Pointer[authTable]
}

type authTable struct {
	tokens  []Principal
	clients map[string]*Principal // by certificate subject (SAN)
}

// Principal is an authenticated caller: a configured token or client.
type Principal struct {
	Name   string
	hash   []byte
	scopes map[string]bool
}

// Why a caller was refused, as metrics and audit records name it.
const (
	ReasonMissing       = "missing"        // no credentials at all
	ReasonUnknownToken  = "unknown_token"  // a bearer token that is not configured
	ReasonUnknownClient = "unknown_client" // a valid certificate naming no configured client
	ReasonForbidden     = "forbidden"      // known, but without the scope
)

// NewAuthenticator builds an Authenticator from validated config entries.
func NewAuthenticator(tokens []config.Token, clients ...config.Client) *Authenticator {
	a := &Authenticator{}
	a.Update(tokens, clients)
	return a
}

// Update replaces every token and client; requests already authenticated
// keep their principal.
func (a *Authenticator) Update(tokens []config.Token, clients []config.Client) {
	t := &authTable{clients: map[string]*Principal{}}
	for _, tok := range tokens {
		h, _ := hex.DecodeString(tok.SHA256) // validated by config
		t.tokens = append(t.tokens, Principal{Name: tok.Name, hash: h, scopes: scopeSet(tok.Scopes)})
	}
	for _, c := range clients {
		t.clients[c.Subject] = &Principal{Name: c.Name, scopes: scopeSet(c.Scopes)}
	}
	a.table.Store(t)
}

func scopeSet(scopes []string) map[string]bool {
	m := make(map[string]bool, len(scopes))
	for _, s := range scopes {
		m[s] = true
	}
	return m
}

// AuthenticateRequest identifies the caller of r: a verified client
// certificate naming a configured client wins; otherwise the bearer token.
// On failure it says why (ReasonMissing and friends).
func (a *Authenticator) AuthenticateRequest(r *http.Request) (*Principal, string) {
	t := a.table.Load()
	header := r.Header.Get("Authorization")
	if r.TLS != nil && len(r.TLS.VerifiedChains) > 0 {
		leaf := r.TLS.VerifiedChains[0][0]
		for _, u := range leaf.URIs {
			if p, ok := t.clients[u.String()]; ok {
				return p, ""
			}
		}
		for _, dns := range leaf.DNSNames {
			if p, ok := t.clients[dns]; ok {
				return p, ""
			}
		}
		if header == "" {
			return nil, ReasonUnknownClient
		}
	}
	if header == "" {
		return nil, ReasonMissing
	}
	if p, ok := t.authenticate(header); ok {
		return p, ""
	}
	return nil, ReasonUnknownToken
}

// Authenticate returns the caller presenting the Authorization header, or
// false.
func (a *Authenticator) Authenticate(header string) (*Principal, bool) {
	return a.table.Load().authenticate(header)
}

// authenticate hashes the presented token and compares the hash with every
// configured one in constant time, looking at all of them whatever matches.
func (t *authTable) authenticate(header string) (*Principal, bool) {
	scheme, token, ok := strings.Cut(header, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || token == "" {
		return nil, false
	}
	sum := config.TokenSum(strings.TrimSpace(token))
	var found *Principal
	for i := range t.tokens {
		if subtle.ConstantTimeCompare(sum[:], t.tokens[i].hash) == 1 {
			found = &t.tokens[i]
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
