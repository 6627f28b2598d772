package config

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/netip"
	"net/url"
	"strings"
)

// validateAuth checks the API's callers, their names, hashes and scopes
// (scopes name key sets of names).
func (c *Config) validateAuth(names map[string]bool, bad func(field, format string, args ...any)) {
	tokenNames := map[string]bool{}
	hashes := map[string]bool{}
	for i, tok := range c.Auth.Tokens {
		f := fmt.Sprintf("auth.tokens[%d]", i)
		if tok.Name == "" {
			bad(f+".name", "is required")
		} else if tokenNames[tok.Name] {
			bad(f+".name", "%q is used by another token", tok.Name)
		}
		tokenNames[tok.Name] = true
		if strings.HasPrefix(tok.SHA256, placeholderPrefix) {
			bad(f+".sha256", "is a placeholder: run `keyd token --name %s` and put the sha256 it prints here (give the token itself to the caller)", cmp.Or(tok.Name, "NAME"))
		} else if b, err := hex.DecodeString(tok.SHA256); err != nil || len(b) != 32 {
			bad(f+".sha256", "must be the 64 hex digits of the token's SHA-256 (`keyd token` prints it)")
		} else if weakToken(tok.SHA256) {
			bad(f+".sha256", "is the hash of a guessable token (a common word or a number): make a random one with `keyd token --name %s`", cmp.Or(tok.Name, "NAME"))
		} else if hashes[strings.ToLower(tok.SHA256)] {
			bad(f+".sha256", "is the hash of another token too")
		}
		hashes[strings.ToLower(tok.SHA256)] = true
		checkScopes(f, tok.Scopes, names, bad)
	}
	subjects := map[string]bool{}
	for i, cl := range c.Auth.Clients {
		f := fmt.Sprintf("auth.clients[%d]", i)
		if cl.Name == "" {
			bad(f+".name", "is required")
		} else if tokenNames[cl.Name] {
			bad(f+".name", "%q is used by another token or client", cl.Name)
		}
		tokenNames[cl.Name] = true
		if u, err := url.Parse(cl.Subject); cl.Subject == "" || err != nil || (u.Scheme == "" && strings.ContainsAny(cl.Subject, "/:@ ")) {
			bad(f+".subject", "%q must be a URI SAN (spiffe://domain/path) or a DNS name of the client's certificate", cl.Subject)
		} else if subjects[cl.Subject] {
			bad(f+".subject", "%q is used by another client", cl.Subject)
		}
		subjects[cl.Subject] = true
		checkScopes(f, cl.Scopes, names, bad)
	}
	for i, cidr := range c.Auth.TrustedProxies {
		if _, err := netip.ParsePrefix(cidr); err != nil {
			bad(fmt.Sprintf("auth.trusted_proxies[%d]", i), "%q is not a CIDR (10.0.0.0/8, fd00::/8; a single address as 192.0.2.1/32)", cidr)
		}
	}
	if p := c.Auth.IPv4Prefix; p != 0 && (p < 8 || p > 32) {
		bad("auth.ipv4_prefix", "%d must be 8 to 32 (bits of an IPv4 address that make one source; default 32)", p)
	}
	if p := c.Auth.IPv6Prefix; p != 0 && (p < 32 || p > 128) {
		bad("auth.ipv6_prefix", "%d must be 32 to 128 (bits of an IPv6 address that make one source; default 64)", p)
	}
}

// TrustedProxyPrefixes are auth.trusted_proxies parsed (after Validate,
// every one parses).
func (a Auth) TrustedProxyPrefixes() []netip.Prefix {
	var out []netip.Prefix
	for _, cidr := range a.TrustedProxies {
		if p, err := netip.ParsePrefix(cidr); err == nil {
			out = append(out, p.Masked())
		}
	}
	return out
}

// TokenSum is the SHA-256 keyd keeps of an API token: the config holds
// its hex (TokenHash, auth.tokens[].sha256), and a presented token is
// compared by it. The one place tokens are hashed.
func TokenSum(token string) [32]byte { return sha256.Sum256([]byte(token)) }

// TokenHash is the hex of TokenSum, as auth.tokens[].sha256 holds it.
func TokenHash(token string) string {
	sum := TokenSum(token)
	return hex.EncodeToString(sum[:])
}
