// Package jwks renders key sets' public keys as JSON Web Key Sets and serves
// them.
//
// A [Publisher] renders a document once per change of a key set (never per
// request): one per key set and one with every key set's keys, each with a
// strong ETag, served from memory with Cache-Control max-age and 304 answers
// to If-None-Match. Only public keys that are pending, active or retired are
// published; revoked keys and HMAC secrets never are, and no private
// parameter ever is (keys are rendered from their public half only). Keys
// of key sets with certificates carry x5c (their certificate, then the
// CA's chain) and x5t#S256.
package jwks

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lestrrat-go/jwx/v3/cert"
	"github.com/lestrrat-go/jwx/v3/jwk"

	"github.com/keyd-dev/keyd/internal/parallel"
	"github.com/keyd-dev/keyd/keystore"
)

// Document is a rendered JWKS, or another cacheable document, and its HTTP
// validators.
type Document struct {
	Body   []byte
	ETag   string // strong, quoted
	MaxAge time.Duration
}

// Publisher keeps the rendered documents of every loaded key set.
type Publisher struct {
	mu     sync.Mutex // serialises Load; readers never take it
	sets   map[string]entry
	issuer string
	docs   atomic.Pointer[documents]
}

type entry struct {
	version uint64
	maxAge  time.Duration
	alg     keystore.Algorithm
	keys    []jwk.Key
	doc     Document // the key set's own document, rendered when loaded
}

type documents struct {
	all       Document
	byName    map[string]Document
	discovery *Document // nil without an issuer URL
}

// New returns a Publisher with no key sets: its global document is empty.
func New() *Publisher {
	p := &Publisher{sets: map[string]entry{}}
	_ = p.rebuild() // an empty set always renders
	return p
}

// Load renders the published keys of ks, configured by p, and replaces the
// key set's previous version in every document. A key set older than the
// loaded one is ignored.
func (p *Publisher) Load(pol keystore.Policy, ks *keystore.KeySet) error {
	return p.LoadAll([]keystore.Policy{pol}, []*keystore.KeySet{ks})
}

// LoadAll loads many key sets at once, as Load does one
// (rotation.BatchListener): each key set's document is rendered on every
// processor, reusing the keys its previous version rendered (parsing an
// RSA-4096 key costs milliseconds), and the global document once.
func (p *Publisher) LoadAll(ps []keystore.Policy, sets []*keystore.KeySet) error {
	known := make([]map[string]jwk.Key, len(sets)) // by kid
	p.mu.Lock()
	for i, ks := range sets {
		known[i] = map[string]jwk.Key{}
		for _, k := range p.sets[ks.Name].keys {
			if kid, ok := k.KeyID(); ok {
				known[i][kid] = k
			}
		}
	}
	p.mu.Unlock()
	entries := make([]entry, len(sets))
	err := parallel.Do(len(sets), func(i int) error {
		ks := sets[i]
		keys, err := publicKeys(ks, ps[i].Certificates, known[i])
		if err != nil {
			return err
		}
		doc, err := render(keys, ps[i].JWKSMaxAge)
		if err != nil {
			return err
		}
		entries[i] = entry{version: ks.Version, maxAge: ps[i].JWKSMaxAge, alg: ks.Algorithm, keys: keys, doc: doc}
		return nil
	})
	if err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for i, ks := range sets {
		if old, ok := p.sets[ks.Name]; ok && ks.Version != 0 && ks.Version < old.version {
			continue
		}
		p.sets[ks.Name] = entries[i]
	}
	return p.rebuild()
}

// SetIssuer serves an OpenID Connect discovery document for issuerURL
// (e.g. https://keys.example.com), whose jwks_uri is the global JWKS under
// it; "" serves none.
func (p *Publisher) SetIssuer(issuerURL string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	old := p.issuer
	p.issuer = strings.TrimSuffix(issuerURL, "/")
	if err := p.rebuild(); err != nil {
		p.issuer = old // refused: nothing changed
		return err
	}
	return nil
}

// rebuild renders the global document from p.sets and publishes it with
// every key set's own document; the caller holds p.mu.
func (p *Publisher) rebuild() error {
	docs := &documents{byName: map[string]Document{}}
	var all []jwk.Key
	var minAge time.Duration
	for _, name := range slices.Sorted(maps.Keys(p.sets)) {
		e := p.sets[name]
		docs.byName[name] = e.doc
		all = append(all, e.keys...)
		if minAge == 0 || e.maxAge < minAge {
			minAge = e.maxAge
		}
	}
	doc, err := render(all, minAge)
	if err != nil {
		return err
	}
	docs.all = doc
	if p.issuer != "" {
		d, err := p.renderDiscovery(minAge)
		if err != nil {
			return err
		}
		docs.discovery = &d
	}
	p.docs.Store(docs)
	return nil
}

// renderDiscovery renders the OpenID Connect discovery document: the
// fields verifiers that discover keys from an issuer read (the ones
// Kubernetes' service account issuer discovery serves too). Only
// algorithms whose keys are published are listed: HMAC keys never are.
func (p *Publisher) renderDiscovery(maxAge time.Duration) (Document, error) {
	algs := []string{}
	for _, e := range p.sets {
		if !e.alg.Symmetric() && !slices.Contains(algs, string(e.alg)) {
			algs = append(algs, string(e.alg))
		}
	}
	slices.Sort(algs)
	body, err := json.Marshal(map[string]any{
		"issuer":                                p.issuer,
		"jwks_uri":                              p.issuer + "/.well-known/jwks.json",
		"response_types_supported":              []string{"id_token"},
		"subject_types_supported":               []string{"public"},
		"id_token_signing_alg_values_supported": algs,
	})
	if err != nil {
		return Document{}, fmt.Errorf("render discovery: %w", err)
	}
	return NewDocument(body, maxAge), nil
}

// Discovery returns the OpenID Connect discovery document, if an issuer
// URL is set.
func (p *Publisher) Discovery() (Document, bool) {
	d := p.docs.Load().discovery
	if d == nil {
		return Document{}, false
	}
	return *d, true
}

// All returns the document with every key set's published keys; its max
// age is the shortest of theirs.
func (p *Publisher) All() Document { return p.docs.Load().all }

// KeySet returns the document of one key set.
func (p *Publisher) KeySet(name string) (Document, bool) {
	d, ok := p.docs.Load().byName[name]
	return d, ok
}

// PublicKeys returns the published keys of ks as JWKs carrying kid, alg and
// use=sig, built from the public half of each key only.
func PublicKeys(ks *keystore.KeySet) ([]jwk.Key, error) { return publicKeys(ks, nil, nil) }

// publicKeys is PublicKeys reusing the keys of known, by kid (a kid names
// one key), with each key's certificate chain (x5c, x5t#S256) where ca
// gives one.
func publicKeys(ks *keystore.KeySet, ca keystore.Certifier, known map[string]jwk.Key) ([]jwk.Key, error) {
	var out []jwk.Key
	for _, k := range ks.Keys {
		if !k.Published() {
			continue
		}
		thumb := ""
		if ca != nil && len(k.Certificate) > 0 {
			sum := sha256.Sum256(k.Certificate)
			thumb = base64.RawURLEncoding.EncodeToString(sum[:])
		}
		key, ok := known[k.ID]
		if ok {
			if had, _ := key.X509CertThumbprintS256(); had == thumb {
				out = append(out, key)
				continue
			}
		}
		key, err := publicKey(ks.Name, k, key)
		if err != nil {
			return nil, err
		}
		if thumb != "" {
			var chain cert.Chain
			for _, der := range ca.Chain(k.Certificate) {
				if err := chain.Add([]byte(base64.StdEncoding.EncodeToString(der))); err != nil {
					return nil, fmt.Errorf("key set %s key %s: x5c: %w", ks.Name, k.ID, err)
				}
			}
			if err := key.Set(jwk.X509CertChainKey, &chain); err != nil {
				return nil, fmt.Errorf("key set %s key %s: set x5c: %w", ks.Name, k.ID, err)
			}
			if err := key.Set(jwk.X509CertThumbprintS256Key, thumb); err != nil {
				return nil, fmt.Errorf("key set %s key %s: set x5t#S256: %w", ks.Name, k.ID, err)
			}
		}
		out = append(out, key)
	}
	return out, nil
}

// publicKey renders k's public half as a JWK carrying kid, alg and
// use=sig; from a copy of known, when given (its certificate fields are
// replaced), instead of parsing the key again.
func publicKey(keyset string, k keystore.Key, known jwk.Key) (jwk.Key, error) {
	if known != nil {
		key, err := known.Clone()
		if err != nil {
			return nil, fmt.Errorf("key set %s key %s: %w", keyset, k.ID, err)
		}
		_ = key.Remove(jwk.X509CertChainKey)
		_ = key.Remove(jwk.X509CertThumbprintS256Key)
		return key, nil
	}
	raw, err := k.VerificationKey()
	if err != nil {
		return nil, err
	}
	pub, err := jwk.Import(raw)
	if err != nil {
		return nil, fmt.Errorf("key set %s key %s: %w", keyset, k.ID, err)
	}
	for name, v := range map[string]any{jwk.KeyIDKey: k.ID, jwk.AlgorithmKey: string(k.Algorithm), jwk.KeyUsageKey: "sig"} {
		if err := pub.Set(name, v); err != nil {
			return nil, fmt.Errorf("key set %s key %s: set %s: %w", keyset, k.ID, name, err)
		}
	}
	return pub, nil
}

func render(keys []jwk.Key, maxAge time.Duration) (Document, error) {
	if keys == nil {
		keys = []jwk.Key{}
	}
	body, err := json.Marshal(struct {
		Keys []jwk.Key `json:"keys"`
	}{keys})
	if err != nil {
		return Document{}, fmt.Errorf("render JWKS: %w", err)
	}
	return NewDocument(body, maxAge), nil
}

// NewDocument makes a Document of body, with a strong ETag, to serve with
// Write: the JWKS and discovery documents, and other cacheable documents
// (the signed revocation list).
func NewDocument(body []byte, maxAge time.Duration) Document {
	sum := sha256.Sum256(body)
	return Document{Body: body, ETag: `"` + base64.RawURLEncoding.EncodeToString(sum[:18]) + `"`, MaxAge: maxAge}
}

// Write serves doc: 200 with the body, or 304 when the request's
// If-None-Match names its ETag. Both carry Cache-Control and ETag. It
// reports whether it answered 304.
func Write(w http.ResponseWriter, r *http.Request, doc Document) (notModified bool) {
	return WriteAs(w, r, doc, "application/json")
}

// WriteAs is Write with another Content-Type.
func WriteAs(w http.ResponseWriter, r *http.Request, doc Document, contentType string) (notModified bool) {
	h := w.Header()
	h.Set("Cache-Control", "public, max-age="+strconv.Itoa(int(doc.MaxAge/time.Second)))
	h.Set("ETag", doc.ETag)
	if match(r.Header.Values("If-None-Match"), doc.ETag) {
		w.WriteHeader(http.StatusNotModified)
		return true
	}
	h.Set("Content-Type", contentType)
	h.Set("Content-Length", strconv.Itoa(len(doc.Body)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(doc.Body)
	return false
}

// match applies If-None-Match's weak comparison (RFC 9110 13.1.2).
func match(headers []string, etag string) bool {
	for _, h := range headers {
		for _, tag := range strings.Split(h, ",") {
			tag = strings.TrimPrefix(strings.TrimSpace(tag), "W/")
			if tag == "*" || tag == etag {
				return true
			}
		}
	}
	return false
}
