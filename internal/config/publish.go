package config

import (
	"fmt"
	"net"
	"net/url"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/keyd-dev/keyd/keystore"
)

// Publish is one target the JWKS and discovery document are written to
// (publish[], docs/publishing.md).
type Publish struct {
	Name         string        `yaml:"name"`
	To           string        `yaml:"to"` // file:///dir or kubernetes://namespace/configmap
	KeySets      []string      `yaml:"keysets"`
	Files        []string      `yaml:"files"`     // jwks, discovery, revocations; default: jwks, and discovery with an issuer
	JWKSPath     string        `yaml:"jwks_path"` // default .well-known/jwks.json
	Issuer       string        `yaml:"issuer"`    // the target's public base URL
	CacheControl string        `yaml:"cache_control"`
	MaxKeys      int           `yaml:"max_keys"`
	Algorithms   []string      `yaml:"algorithms"`
	Required     bool          `yaml:"required"` // rotations wait for this target
	Interval     time.Duration `yaml:"interval"` // re-assert every; default 10m
	Kubeconfig   string        `yaml:"kubeconfig"`
}

// PublishFiles are the files of p: as given, or the JWKS and, with an
// issuer, the discovery document.
func (p Publish) PublishFiles() []string {
	if len(p.Files) > 0 {
		return p.Files
	}
	if p.Issuer != "" {
		return []string{"jwks", "discovery"}
	}
	return []string{"jwks"}
}

// validatePublish checks publish[]: names, where to, key sets that
// publish keys, files, the issuer, consumer rules.
func (c *Config) validatePublish(bad func(field, format string, args ...any)) {
	algs := map[string]keystore.Algorithm{}
	for _, ks := range c.KeySets {
		a, _ := keystore.ParseAlgorithm(ks.Algorithm)
		algs[ks.Name] = a
	}
	names := map[string]bool{}
	for i, p := range c.Publish {
		f := fmt.Sprintf("publish[%d]", i)
		if !nameRE.MatchString(p.Name) {
			bad(f+".name", "%q must be 1-63 characters of a-z, 0-9, '-' and '_' (it names the target in metrics and status)", p.Name)
		} else if names[p.Name] {
			bad(f+".name", "%q is used by another target", p.Name)
		}
		names[p.Name] = true
		validatePublishTo(f, p, bad)
		if len(p.KeySets) == 0 {
			bad(f+".keysets", "is required: the key sets whose public keys go there")
		}
		for j, name := range p.KeySets {
			a, ok := algs[name]
			switch {
			case !ok:
				bad(fmt.Sprintf("%s.keysets[%d]", f, j), "%q is not a configured key set", name)
			case a.Symmetric():
				bad(fmt.Sprintf("%s.keysets[%d]", f, j), "%q is %s: HMAC keys are secrets and never published", name, a)
			}
		}
		for j, file := range p.Files {
			if file != "jwks" && file != "discovery" && file != "revocations" {
				bad(fmt.Sprintf("%s.files[%d]", f, j), "%q is not jwks, discovery or revocations", file)
			}
		}
		if p.Required && !slices.Contains(p.PublishFiles(), "jwks") {
			bad(f+".required", "needs jwks among files: a rotation waits for the keys a target holds, and only the JWKS holds them")
		}
		if slices.Contains(p.PublishFiles(), "discovery") {
			if u, err := url.Parse(p.Issuer); err != nil || !(u.Scheme == "https" || u.Scheme == "http" && loopbackHost(u.Hostname())) || u.Host == "" || u.RawQuery != "" || strings.HasSuffix(p.Issuer, "/") {
				bad(f+".issuer", "%q must be the https URL verifiers fetch the target from, without a trailing slash (the discovery document's issuer; http only on loopback, for trying it out)", p.Issuer)
			}
		}
		if jp := p.JWKSPath; jp != "" && (strings.HasPrefix(jp, "/") || path.Clean(jp) != jp || strings.HasPrefix(jp, "..")) {
			bad(f+".jwks_path", "%q must be a relative path such as openid/v1/jwks", jp)
		}
		if p.MaxKeys < 0 {
			bad(f+".max_keys", "%d must be 0 (no limit) or more", p.MaxKeys)
		}
		for j, a := range p.Algorithms {
			if alg, err := keystore.ParseAlgorithm(a); err != nil || alg.Symmetric() {
				bad(fmt.Sprintf("%s.algorithms[%d]", f, j), "%q is not a published algorithm (RS256, PS256, ES256, EdDSA, ...)", a)
			}
		}
		if p.Interval != 0 && p.Interval < 10*time.Second {
			bad(f+".interval", "%v is too short: at least 10s (default 10m)", p.Interval)
		}
	}
}

func validatePublishTo(f string, p Publish, bad func(field, format string, args ...any)) {
	u, err := url.Parse(p.To)
	switch {
	case p.To == "":
		bad(f+".to", "is required: s3://bucket/prefix, gs://bucket/prefix, azblob://container/prefix, file:///dir or kubernetes://namespace/configmap")
	case err != nil:
		bad(f+".to", "%q is not a URL", p.To)
	case u.Scheme == "file":
		if !strings.HasPrefix(u.Path, "/") || u.Host != "" {
			bad(f+".to", "%q must be file:///absolute/folder", p.To)
		}
	case u.Scheme == "kubernetes":
		if rest := strings.Trim(u.Path, "/"); u.Host == "" || rest == "" || strings.Contains(rest, "/") {
			bad(f+".to", "%q must be kubernetes://NAMESPACE/CONFIGMAP", p.To)
		}
	case u.Scheme == "s3" || u.Scheme == "gs" || u.Scheme == "azblob":
		if u.Host == "" {
			bad(f+".to", "%q names no bucket: %s://BUCKET/prefix", u.Redacted(), u.Scheme)
		}
		if u.User != nil {
			bad(f+".to", "holds credentials: leave them to the cloud's credential chain (environment, workload identity, profile)")
		}
	default:
		bad(f+".to", "%q: the scheme must be s3, gs, azblob, file or kubernetes", u.Redacted())
	}
	if p.Kubeconfig != "" && u != nil && u.Scheme != "kubernetes" {
		bad(f+".kubeconfig", "is for kubernetes:// targets")
	}
}

// loopbackHost reports whether host is localhost or a loopback address.
func loopbackHost(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
