// Package config reads keyd's YAML configuration: a typed struct decoded
// strictly (an unknown field is an error), defaults filled in, and Validate
// reporting every problem at once, each naming its field and the reason. It
// lives in internal/ because only the daemon reads it; the domain packages
// take the keystore.Policy values it produces.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/keyd-dev/keyd/keystore"
)

// Config is the whole configuration file.
type Config struct {
	Listen  string   `yaml:"listen"`
	Storage Storage  `yaml:"storage"`
	KeySets []KeySet `yaml:"keysets"`
	Auth    Auth     `yaml:"auth"`
	Metrics Metrics  `yaml:"metrics"`
	Audit   Audit    `yaml:"audit"`
	TLS     TLS      `yaml:"tls"`
	// Kubernetes serves the ExternalJWTSigner gRPC service for
	// kube-apiserver on a Unix socket.
	Kubernetes Kubernetes `yaml:"kubernetes"`
	// IssuerURL, when set, serves OpenID Connect discovery for it.
	IssuerURL string    `yaml:"issuer_url"`
	LogLevel  string    `yaml:"log_level"` // debug, info, warn, error; "" keeps --log-level
	Backup    Backup    `yaml:"backup"`    // scheduled backups
	Publish   []Publish `yaml:"publish"`   // targets of the JWKS and discovery document
}

// Kubernetes makes a key set the cluster's service account token signer.
type Kubernetes struct {
	Socket string `yaml:"socket"` // e.g. /run/keyd/kube.sock; "": off
	KeySet string `yaml:"keyset"`
	Group  string `yaml:"group"` // group that may dial the socket (mode 0660); "": owner only (0600)
}

// TLS serves HTTPS, and optionally authenticates clients by certificate.
type TLS struct {
	CertFile     string `yaml:"cert_file"`
	KeyFile      string `yaml:"key_file"`
	ClientCAFile string `yaml:"client_ca_file"` // CA bundle for client certificates (auth.clients)
}

// On reports whether HTTPS is configured.
func (t TLS) On() bool { return t.CertFile != "" }

// Metrics configures the Prometheus endpoint.
type Metrics struct {
	Enabled *bool  `yaml:"enabled"` // nil: true
	Listen  string `yaml:"listen"`  // own address for /metrics; "": served on listen
}

// On reports whether metrics are collected.
func (m Metrics) On() bool { return m.Enabled == nil || *m.Enabled }

// Audit configures the audit trail.
type Audit struct {
	Path     string `yaml:"path"`     // a file, "-" for stdout, "": no audit trail
	Required bool   `yaml:"required"` // fail closed: no token without its record on disk
	// KeyFile keys the chain (HMAC) and turns on checkpoints: base64 of
	// 32 random bytes, mode 0600, kept where whoever can write the log
	// cannot read it.
	KeyFile string `yaml:"key_file"`
}

// Storage chooses and configures the backend.
type Storage struct {
	Backend string `yaml:"backend"` // file (default) or vault
	File    File   `yaml:"file"`
	Vault   Vault  `yaml:"vault"`
	// TokenState is where token revocations live: the key store itself
	// (the default) or Redis.
	TokenState TokenState `yaml:"token_state"`
}

// TokenState configures the token state engine.
type TokenState struct {
	Backend      string `yaml:"backend"` // "" (the key store) or redis
	URL          string `yaml:"url"`     // redis://host:6379/0 or rediss:// for TLS
	Username     string `yaml:"username"`
	PasswordFile string `yaml:"password_file"` // the AUTH password, never in the config itself
	TLSCAFile    string `yaml:"tls_ca_file"`   // CA bundle for rediss://
	Prefix       string `yaml:"prefix"`        // key prefix; default "keyd:"
}

// Vault configures the Vault (KV v2) backend: its connection, and where
// in Vault the key sets are.
type Vault struct {
	VaultConn    `yaml:",inline"`
	Mount        string        `yaml:"mount"`         // KV v2 mount
	Prefix       string        `yaml:"prefix"`        // path prefix for key sets
	PollInterval time.Duration `yaml:"poll_interval"` // how often replicas reload
}

// VaultConn is a connection to Vault: where, how keyd logs in, TLS, and
// how long each request may take.
type VaultConn struct {
	Address string        `yaml:"address"` // else VAULT_ADDR
	Auth    VaultAuth     `yaml:"auth"`
	TLS     VaultTLS      `yaml:"tls"`
	Timeout time.Duration `yaml:"timeout"` // per Vault request
}

// VaultAuth chooses how keyd logs in to Vault.
type VaultAuth struct {
	Method     string          `yaml:"method"` // token (VAULT_TOKEN), approle or kubernetes
	AppRole    VaultAppRole    `yaml:"approle"`
	Kubernetes VaultKubernetes `yaml:"kubernetes"`
}

// VaultKubernetes is the Kubernetes login: the pod's service account
// token for a Vault token.
type VaultKubernetes struct {
	Role      string `yaml:"role"`
	TokenFile string `yaml:"token_file"` // default /var/run/secrets/kubernetes.io/serviceaccount/token
	Mount     string `yaml:"mount"`      // default kubernetes
}

// VaultAppRole is the AppRole login.
type VaultAppRole struct {
	RoleID       string `yaml:"role_id"`
	SecretIDFile string `yaml:"secret_id_file"`
	Mount        string `yaml:"mount"` // default approle
}

// VaultTLS configures TLS to Vault.
type VaultTLS struct {
	CAFile     string `yaml:"ca_file"`
	SkipVerify bool   `yaml:"skip_verify"`
}

// File configures the bbolt backend.
type File struct {
	Path          string `yaml:"path"`
	MasterKeyFile string `yaml:"master_key_file"` // else KEYD_MASTER_KEY
	// MasterKey, when wrapped_by is set, says who unwraps the key in
	// master_key_file: Vault Transit or a PKCS#11 token.
	MasterKey MasterKey `yaml:"master_key"`
}

// KeySet is one key set's settings.
type KeySet struct {
	Name       string         `yaml:"name"`
	Algorithm  string         `yaml:"algorithm"`
	RSABits    int            `yaml:"rsa_bits"`
	Rotation   string         `yaml:"rotation"`
	TokenTTL   time.Duration  `yaml:"token_ttl"`
	JWKSMaxAge time.Duration  `yaml:"jwks_max_age"`
	Leeway     *time.Duration `yaml:"leeway"` // nil: DefaultLeeway; 0s is allowed
	Issuer     string         `yaml:"issuer"`
	Verify     Verify         `yaml:"verify"`
	// MaxRevocations bounds the token revocations in force (0: default).
	MaxRevocations int `yaml:"max_revocations"`
	// Refresh enables access + refresh token pairs.
	Refresh Refresh `yaml:"refresh"`
	// Legacy accepts tokens without a kid, for a while, with one imported
	// key.
	Legacy Legacy `yaml:"legacy"`
	// Certificates gives each published key an X.509 certificate (x5c).
	Certificates Certificates `yaml:"certificates"`
	// Custody keeps the key set's private keys outside keyd (Vault Transit).
	Custody Custody `yaml:"custody"`
}

// Legacy names the imported key that verifies tokens without a kid.
type Legacy struct {
	KID             string    `yaml:"kid"`
	Until           time.Time `yaml:"until"`             // RFC 3339
	AllowMissingExp bool      `yaml:"allow_missing_exp"` // also accept them without exp, until Until
}

// Refresh configures a key set's token pairs.
type Refresh struct {
	TTL time.Duration `yaml:"ttl"` // how long a login's refresh tokens work; 0: no pairs
}

// Verify is a key set's verify policy: what every token presented to its
// verify endpoint must satisfy. A request can narrow it, never drop it.
type Verify struct {
	Audience       []string `yaml:"audience"`
	Issuer         string   `yaml:"issuer"`
	RequiredClaims []string `yaml:"required_claims"`
}

// Auth lists the API's callers: bearer tokens, and clients that present a
// certificate (with tls.client_ca_file).
type Auth struct {
	Tokens  []Token  `yaml:"tokens"`
	Clients []Client `yaml:"clients"`
	// TrustedProxies are the CIDRs of the load balancers in front of keyd:
	// from them, X-Forwarded-For names the caller whose failed logins are
	// limited. Empty: the peer's address, and X-Forwarded-For is ignored.
	TrustedProxies []string `yaml:"trusted_proxies"`
	// IPv4Prefix and IPv6Prefix are how many bits of a caller's address
	// make the source failed logins are limited by (default 32 and 64).
	IPv4Prefix int `yaml:"ipv4_prefix"`
	IPv6Prefix int `yaml:"ipv6_prefix"`
}

// Client is a caller identified by its TLS client certificate: a SAN URI
// (e.g. a SPIFFE ID, spiffe://example.org/billing) or DNS name.
type Client struct {
	Name    string   `yaml:"name"`
	Subject string   `yaml:"subject"`
	Scopes  []string `yaml:"scopes"`
}

// Token is one API token: its name (for logs), the hex SHA-256 of the
// secret token, and what it may do.
type Token struct {
	Name   string   `yaml:"name"`
	SHA256 string   `yaml:"sha256"`
	Scopes []string `yaml:"scopes"`
}

// Defaults.
const (
	DefaultListen     = "127.0.0.1:8080"
	DefaultBackend    = "file"
	DefaultPath       = "./keyd-data/keyd.db"
	DefaultRotation   = "@daily"
	DefaultTokenTTL   = 15 * time.Minute
	DefaultJWKSMaxAge = 5 * time.Minute
	DefaultLeeway     = time.Minute

	DefaultVaultMount        = "secret"
	DefaultVaultPrefix       = "keyd"
	DefaultVaultPollInterval = 5 * time.Second
	DefaultVaultTimeout      = 10 * time.Second
)

// Scopes.
const (
	ScopeAdmin = "admin"
	// ScopeSign and ScopeVerify are prefixes: "sign:<keyset>", or
	// "sign:*" for every key set.
	ScopeSign   = "sign"
	ScopeVerify = "verify"
)

var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)

// Load reads, decodes and validates the file at path.
func Load(path string) (*Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	defer f.Close()
	return Parse(f, path)
}

// Parse decodes and validates a configuration; name is used in messages.
func Parse(r io.Reader, name string) (*Config, error) {
	data, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", name, err)
	}
	var c Config
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		msg := strings.TrimPrefix(err.Error(), "yaml: ")
		if hint := indentHint(data); hint != "" {
			msg += " (" + hint + ")"
		}
		return nil, fmt.Errorf("config %s: %s", name, msg)
	}
	// Every problem at once: those of the YAML itself (named by path),
	// then Validate's of what could be decoded.
	yamlErrs := checkYAML(&doc)
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(len(yamlErrs) == 0) // unknown fields are named above
	err = dec.Decode(&c)
	var typeErr *yaml.TypeError
	switch {
	case errors.As(err, &typeErr):
		// A value of the wrong type: yaml decoded the rest, so Validate
		// still runs. Durations without a unit are named above already.
		for _, e := range typeErr.Errors {
			if !strings.Contains(e, "into time.Duration") || len(yamlErrs) == 0 {
				yamlErrs = append(yamlErrs, errors.New(e))
			}
		}
	case err != nil && !errors.Is(err, io.EOF):
		return nil, fmt.Errorf("config %s: %w", name, errors.Join(append(yamlErrs, errors.New(strings.TrimPrefix(err.Error(), "yaml: ")))...))
	}
	c.ApplyDefaults()
	if err := c.Validate(); err != nil {
		yamlErrs = append(yamlErrs, err)
	}
	if len(yamlErrs) > 0 {
		return nil, fmt.Errorf("config %s: %w", name, errors.Join(yamlErrs...))
	}
	return &c, nil
}

// Default is the embedded default configuration: one ES256 key set called
// "default" rotating daily, the bbolt store under ./keyd-data.
func Default() *Config {
	c := &Config{KeySets: []KeySet{{Name: "default", Algorithm: string(keystore.ES256)}}}
	c.ApplyDefaults()
	return c
}

// ApplyDefaults fills in every unset field that has a default.
func (c *Config) ApplyDefaults() {
	if c.Listen == "" {
		c.Listen = DefaultListen
	}
	if c.Storage.Backend == "" {
		c.Storage.Backend = DefaultBackend
	}
	if c.Storage.Backend == "file" && c.Storage.File.Path == "" {
		c.Storage.File.Path = DefaultPath
	}
	if c.Storage.Backend == "vault" {
		v := &c.Storage.Vault
		if v.Mount == "" {
			v.Mount = DefaultVaultMount
		}
		if v.Prefix == "" {
			v.Prefix = DefaultVaultPrefix
		}
		v.VaultConn.applyDefaults()
		if v.PollInterval == 0 {
			v.PollInterval = DefaultVaultPollInterval
		}
	}
	c.Storage.File.MasterKey.applyDefaults()
	for i := range c.KeySets {
		ks := &c.KeySets[i]
		if ks.Rotation == "" {
			ks.Rotation = DefaultRotation
		}
		if ks.TokenTTL == 0 {
			ks.TokenTTL = DefaultTokenTTL
		}
		if ks.JWKSMaxAge == 0 {
			ks.JWKSMaxAge = DefaultJWKSMaxAge
		}
		if ks.Leeway == nil {
			d := DefaultLeeway
			ks.Leeway = &d
		}
		if ks.RSABits == 0 && keystore.Algorithm(ks.Algorithm).Family() == keystore.FamilyRSA {
			ks.RSABits = keystore.DefaultRSABits
		}
	}
}

// FieldError is one problem with one field.
type FieldError struct {
	Field  string // e.g. keysets[0].algorithm
	Reason string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Reason }

// Validate reports every problem in c, joined, each a *FieldError.
func (c *Config) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, &FieldError{Field: field, Reason: fmt.Sprintf(format, args...)})
	}
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		bad("listen", "%q is not host:port (%v)", c.Listen, err)
	}
	if c.Metrics.Listen != "" {
		if !c.Metrics.On() {
			bad("metrics.listen", "is set but metrics.enabled is false")
		} else if _, _, err := net.SplitHostPort(c.Metrics.Listen); err != nil {
			bad("metrics.listen", "%q is not host:port (%v)", c.Metrics.Listen, err)
		}
	}
	switch t := c.TLS; {
	case (t.CertFile == "") != (t.KeyFile == ""):
		bad("tls", "cert_file and key_file go together")
	case t.ClientCAFile != "" && t.CertFile == "":
		bad("tls.client_ca_file", "needs tls.cert_file and tls.key_file: client certificates need HTTPS")
	}
	if len(c.Auth.Clients) > 0 && c.TLS.ClientCAFile == "" {
		bad("auth.clients", "needs tls.client_ca_file to verify the clients' certificates")
	}
	if c.IssuerURL != "" {
		if u, err := url.Parse(c.IssuerURL); err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") || u.RawQuery != "" || u.Fragment != "" {
			bad("issuer_url", "%q must be an absolute URL (https in production) without query or fragment (OpenID Connect Discovery)", c.IssuerURL)
		}
	}
	if c.LogLevel != "" {
		var l slog.Level
		if err := l.UnmarshalText([]byte(c.LogLevel)); err != nil {
			bad("log_level", "%q is not debug, info, warn or error", c.LogLevel)
		}
	}
	if k := c.Kubernetes; k.Socket != "" || k.KeySet != "" {
		c.validateKubernetes(bad)
	}
	if c.Audit.Required && c.Audit.Path == "" {
		bad("audit.required", "needs audit.path: there is nowhere to write the records")
	}
	c.validateStorage(bad)
	c.validateBackup(bad)
	names := c.validateKeySets(bad)
	c.validatePublish(bad)
	c.validateAuth(names, bad)
	return errors.Join(errs...)
}

// validateStorage checks storage: the backend and its settings, and the
// token state engine.
func (c *Config) validateStorage(bad func(field, format string, args ...any)) {
	switch c.Storage.Backend {
	case "file":
		if c.Storage.File.Path == "" {
			bad("storage.file.path", "is required")
		}
		c.Storage.File.validateMasterKey(bad)
	case "vault":
		v := c.Storage.Vault
		if strings.Trim(v.Mount, "/") == "" {
			bad("storage.vault.mount", "is required")
		}
		if strings.Trim(v.Prefix, "/") == "" {
			bad("storage.vault.prefix", "is required")
		}
		v.VaultConn.validate("storage.vault", bad)
		if v.PollInterval <= 0 {
			bad("storage.vault.poll_interval", "must be positive, got %v", v.PollInterval)
		}
	default:
		bad("storage.backend", "%q is not supported (want \"file\" or \"vault\")", c.Storage.Backend)
	}
	switch ts := c.Storage.TokenState; ts.Backend {
	case "":
		if ts != (TokenState{}) {
			bad("storage.token_state.backend", "is required when token_state is set (redis)")
		}
	case "redis":
		if u, err := url.Parse(ts.URL); ts.URL == "" || err != nil || (u.Scheme != "redis" && u.Scheme != "rediss") {
			bad("storage.token_state.url", "must be redis://host:port/db (or rediss:// for TLS)")
		} else if u.User != nil {
			if _, hasPassword := u.User.Password(); hasPassword {
				bad("storage.token_state.url", "holds a password: put it in password_file instead")
			}
		}
		if ts.TLSCAFile != "" && !strings.HasPrefix(ts.URL, "rediss://") {
			bad("storage.token_state.tls_ca_file", "is for a rediss:// url")
		}
	default:
		bad("storage.token_state.backend", "%q is not supported (want redis, or leave it out for the key store)", ts.Backend)
	}
}

// validateKubernetes checks the key set kube-apiserver would use: it must
// exist, use an algorithm kube-apiserver accepts, and allow tokens of at
// least 600s (kube-apiserver's floor for max_token_expiration_seconds).
func (c *Config) validateKubernetes(bad func(field, format string, args ...any)) {
	k := c.Kubernetes
	if k.Socket == "" || !filepath.IsAbs(k.Socket) {
		bad("kubernetes.socket", "must be an absolute path, e.g. /run/keyd/kube.sock")
	} else if len(k.Socket) > 100 {
		bad("kubernetes.socket", "%q is longer than a Unix socket path may be", k.Socket)
	}
	i := slices.IndexFunc(c.KeySets, func(ks KeySet) bool { return ks.Name == k.KeySet })
	if i < 0 {
		bad("kubernetes.keyset", "%q is not a configured key set", k.KeySet)
		return
	}
	ks := c.KeySets[i]
	switch keystore.Algorithm(ks.Algorithm) {
	case keystore.RS256, keystore.ES256, keystore.ES384, keystore.ES512:
	default:
		bad(fmt.Sprintf("keysets[%d].algorithm", i), "%s cannot sign service account tokens: kube-apiserver accepts RS256, ES256, ES384 and ES512 (kubernetes.keyset is %s)", ks.Algorithm, ks.Name)
	}
	if ks.TokenTTL < 600*time.Second {
		bad(fmt.Sprintf("keysets[%d].token_ttl", i), "%v is under the 600s kube-apiserver requires of an external signer's max_token_expiration_seconds", ks.TokenTTL)
	}
}

// checkScopes checks the scopes of the token or client at field f.
func checkScopes(f string, scopes []string, keysets map[string]bool, bad func(field, format string, args ...any)) {
	if len(scopes) == 0 {
		bad(f+".scopes", "is empty: the caller could do nothing")
	}
	for j, sc := range scopes {
		if reason := checkScope(sc, keysets); reason != "" {
			bad(fmt.Sprintf("%s.scopes[%d]", f, j), "%s", reason)
		}
	}
}

func checkScope(sc string, keysets map[string]bool) string {
	if sc == ScopeAdmin {
		return ""
	}
	kind, set, ok := strings.Cut(sc, ":")
	if !ok || (kind != ScopeSign && kind != ScopeVerify) {
		return fmt.Sprintf("%q is not a scope (want admin, sign:<keyset>, verify:<keyset>, sign:* or verify:*)", sc)
	}
	if set != "*" && !keysets[set] {
		return fmt.Sprintf("%q names key set %q, which is not configured", sc, set)
	}
	return ""
}

// PublishMargin covers the moment between a key's creation being stored and
// the JWKS documents being re-rendered with it, and the whole-second
// rounding of Cache-Control max-age.
const PublishMargin = time.Second

// pollInterval is how long a change can take to reach other replicas: 0
// for a single process.
func (c *Config) pollInterval() time.Duration {
	if c.Storage.Backend == "vault" && c.Storage.Vault.PollInterval > 0 {
		return c.Storage.Vault.PollInterval
	}
	return 0
}

// publishDelay is how long a new key can take to appear in every JWKS
// keyd serves. The schedule check at start leaves the margin out: a tick
// that comes that much early only waits for it.
func (c *Config) publishDelay() time.Duration { return c.pollInterval() + PublishMargin }

func (c *Config) publishDelayNote() string {
	if d := c.pollInterval(); d > 0 {
		return fmt.Sprintf(" + storage.vault.poll_interval %v", d)
	}
	return ""
}

// Policies returns the validated key set settings as domain policies.
func (c *Config) Policies() []keystore.Policy {
	out := make([]keystore.Policy, len(c.KeySets))
	for i, ks := range c.KeySets {
		out[i] = keystore.Policy{
			Name: ks.Name, Algorithm: keystore.Algorithm(ks.Algorithm), RSABits: ks.RSABits,
			Rotation: ks.Rotation, TokenTTL: ks.TokenTTL, JWKSMaxAge: ks.JWKSMaxAge,
			Leeway: *ks.Leeway, Issuer: ks.Issuer, PublishDelay: c.publishDelay(),
			Verify:         keystore.VerifyPolicy{Audience: ks.Verify.Audience, Issuer: ks.Verify.Issuer, RequiredClaims: ks.Verify.RequiredClaims},
			MaxRevocations: ks.MaxRevocations,
			RefreshTTL:     ks.Refresh.TTL,
			Legacy:         keystore.LegacyPolicy{KID: ks.Legacy.KID, Until: ks.Legacy.Until, AllowMissingExp: ks.Legacy.AllowMissingExp},
		}
	}
	return out
}
