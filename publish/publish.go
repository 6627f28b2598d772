// Package publish writes keyd's public documents (the JWKS and the OpenID
// Connect discovery document) to where verifiers read them without
// reaching keyd: a folder an nginx or CDN origin serves, an object store
// (gocloud.dev/blob), a Kubernetes ConfigMap. Every write is read back and
// compared, and each target remembers since when it has held each key, so
// that a rotation can wait until every required target has held the new
// key for its cache time (Set.Held). It is a package of its own because
// publishing and its gate are one capability the daemon only wires: the
// engines (publish/blob, publish/configmap) implement Target and pass
// publishtest.
package publish

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/keyd-dev/keyd/jwks"
)

// Target is where a publisher writes its files: one small interface per
// place, each engine a package of its own.
type Target interface {
	// Put writes data under name (a relative path such as
	// ".well-known/jwks.json") with its HTTP content type and cache
	// control, replacing what was there, whole.
	Put(ctx context.Context, name string, data []byte, contentType, cacheControl string) error
	// Get reads name back: ErrNotFound when absent.
	Get(ctx context.Context, name string) ([]byte, error)
	Close() error
}

// ErrNotFound is a file a target does not hold.
var ErrNotFound = errors.New("not found")

// Source gives the published JWKS of a key set (jwks.Publisher).
type Source interface {
	KeySet(name string) (jwks.Document, bool)
}

// RevocationSource is a Source that also gives a key set's signed
// revocation list (the signer's), for the revocations file.
type RevocationSource interface {
	Source
	RevocationList(name string) (jwks.Document, error)
}

// The files a target can hold.
const (
	FileJWKS        = "jwks"
	FileDiscovery   = "discovery"
	FileRevocations = "revocations" // revocations/KEYSET.jwt, one per key set
)

// DefaultJWKSPath is where the JWKS goes unless a target says otherwise.
const DefaultJWKSPath = ".well-known/jwks.json"

// DiscoveryPath is where the OpenID Connect discovery document goes.
const DiscoveryPath = ".well-known/openid-configuration"

// Spec is one target's settings (publish[] in the config).
type Spec struct {
	Name         string
	KeySets      []string
	Files        []string // FileJWKS, FileDiscovery
	JWKSPath     string   // default DefaultJWKSPath
	Issuer       string   // the public base URL of the target (discovery)
	CacheControl string   // default: public, max-age= the key sets' jwks_max_age
	MaxKeys      int      // 0: no limit
	Algorithms   []string // empty: every algorithm
	Required     bool     // rotations wait for this target
	Interval     time.Duration
	// Timeout bounds one round of writes and read-backs (default
	// DefaultTimeout): a store that stops answering is an error, counted
	// and retried, not a publisher stuck for good.
	Timeout time.Duration
}

// DefaultTimeout bounds a round of publishing unless Spec.Timeout says.
const DefaultTimeout = 30 * time.Second

// Documents are what a target is to hold.
type Documents struct {
	Files        map[string][]byte // by path
	Types        map[string]string // content type by path (default application/json)
	Kids         []string          // every kid in the JWKS
	MaxAge       time.Duration     // the shortest jwks_max_age of its key sets
	CacheControl string
}

// Render makes the documents of spec from src: the JWKS of its key sets
// (keys of the listed algorithms only, at most MaxKeys) and, with an
// issuer, the discovery document pointing at it.
func Render(spec Spec, src Source) (*Documents, error) {
	type key struct {
		Kid string `json:"kid"`
		Alg string `json:"alg"`
	}
	var keys []json.RawMessage
	d := &Documents{Files: map[string][]byte{}, Types: map[string]string{}}
	var algs []string
	for _, name := range spec.KeySets {
		doc, ok := src.KeySet(name)
		if !ok {
			return nil, fmt.Errorf("key set %s is not loaded", name)
		}
		var set struct {
			Keys []json.RawMessage `json:"keys"`
		}
		if err := json.Unmarshal(doc.Body, &set); err != nil {
			return nil, fmt.Errorf("key set %s: %w", name, err)
		}
		if d.MaxAge == 0 || doc.MaxAge < d.MaxAge {
			d.MaxAge = doc.MaxAge
		}
		for _, raw := range set.Keys {
			var k key
			if err := json.Unmarshal(raw, &k); err != nil {
				return nil, err
			}
			if len(spec.Algorithms) > 0 && !slices.Contains(spec.Algorithms, k.Alg) || slices.Contains(d.Kids, k.Kid) {
				continue
			}
			keys = append(keys, raw)
			d.Kids = append(d.Kids, k.Kid)
			if !slices.Contains(algs, k.Alg) {
				algs = append(algs, k.Alg)
			}
		}
	}
	if spec.MaxKeys > 0 && len(keys) > spec.MaxKeys {
		return nil, fmt.Errorf("the JWKS would hold %d keys, more than max_keys %d (the consumer's limit): publish fewer key sets or algorithms here, or rotate less often", len(keys), spec.MaxKeys)
	}
	d.CacheControl = spec.CacheControl
	if d.CacheControl == "" {
		d.CacheControl = "public, max-age=" + strconv.Itoa(int(d.MaxAge/time.Second))
	}
	jwksPath := spec.JWKSPath
	if jwksPath == "" {
		jwksPath = DefaultJWKSPath
	}
	if slices.Contains(spec.Files, FileJWKS) {
		body, err := json.Marshal(map[string]any{"keys": append([]json.RawMessage{}, keys...)})
		if err != nil {
			return nil, err
		}
		d.Files[jwksPath] = body
	} else {
		d.Kids = nil // no JWKS here: the target holds no key for the gate
	}
	if slices.Contains(spec.Files, FileDiscovery) {
		slices.Sort(algs)
		body, err := json.Marshal(map[string]any{
			"issuer":                                spec.Issuer,
			"jwks_uri":                              spec.Issuer + "/" + jwksPath,
			"response_types_supported":              []string{"id_token"},
			"subject_types_supported":               []string{"public"},
			"id_token_signing_alg_values_supported": append([]string{}, algs...),
		})
		if err != nil {
			return nil, err
		}
		d.Files[DiscoveryPath] = body
	}
	if slices.Contains(spec.Files, FileRevocations) {
		rs, ok := src.(RevocationSource)
		if !ok {
			return nil, errors.New("no revocation lists to publish here")
		}
		for _, name := range spec.KeySets {
			doc, err := rs.RevocationList(name)
			if err != nil {
				return nil, fmt.Errorf("key set %s's revocation list: %w", name, err)
			}
			path := "revocations/" + name + ".jwt"
			d.Files[path], d.Types[path] = doc.Body, "application/jwt"
		}
	}
	return d, nil
}

// Publisher keeps one target up to date.
type Publisher struct {
	Spec   Spec
	target Target
	src    Source
	now    func() time.Time
	report func(target string, err error) // metrics; nil: none

	mu      sync.Mutex
	held    map[string]time.Time // kid: since when the target has been read back holding it
	maxAge  time.Duration
	written string // fingerprint of the documents last confirmed
}

// New returns the publisher of spec to target.
func New(spec Spec, target Target, src Source, now func() time.Time, report func(string, error)) *Publisher {
	return &Publisher{Spec: spec, target: target, src: src, now: now, report: report, held: map[string]time.Time{}}
}

// Once renders the documents and, unless the target holds them already
// (force: write anyway, the timer's re-assertion), writes each file, reads
// it back and compares. Kids found in what was read back are held from
// now (or since earlier); kids no longer there are forgotten.
func (p *Publisher) Once(ctx context.Context, force bool) error {
	wrote, err := p.once(ctx, force)
	if p.report != nil && (err != nil || wrote) {
		p.report(p.Spec.Name, err)
	}
	return err
}

// once is Once; wrote says whether it wrote (and confirmed) the files.
func (p *Publisher) once(ctx context.Context, force bool) (wrote bool, err error) {
	docs, err := Render(p.Spec, p.src)
	if err != nil {
		return false, err
	}
	fp := fingerprint(docs)
	p.mu.Lock()
	same := fp == p.written
	p.mu.Unlock()
	if same && !force {
		return false, nil
	}
	for _, name := range slices.Sorted(maps.Keys(docs.Files)) {
		ct := cmp.Or(docs.Types[name], "application/json")
		if err := p.target.Put(ctx, name, docs.Files[name], ct, docs.CacheControl); err != nil {
			return false, fmt.Errorf("write %s: %w", name, err)
		}
		back, err := p.target.Get(ctx, name)
		if err != nil {
			return false, fmt.Errorf("read back %s: %w", name, err)
		}
		if !bytes.Equal(back, docs.Files[name]) {
			return false, fmt.Errorf("read back %s: it differs from what was written (an eventually consistent store, or another writer)", name)
		}
	}
	now := p.now()
	p.mu.Lock()
	defer p.mu.Unlock()
	kept := map[string]time.Time{}
	for _, kid := range docs.Kids {
		since, ok := p.held[kid]
		if !ok {
			since = now
		}
		kept[kid] = since
	}
	p.held, p.maxAge, p.written = kept, docs.MaxAge, fp
	return true, nil
}

// Held says since when the target has held kid (read back), and how long
// its readers may cache a JWKS; false when it does not hold it.
func (p *Publisher) Held(kid string) (since time.Time, cacheFor time.Duration, ok bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	since, ok = p.held[kid]
	return since, p.maxAge, ok
}

// Run publishes at once, then whenever the documents change (checked
// every second) and every Spec.Interval whatever happens (a store emptied
// behind keyd's back), retrying failures with backoff (1 s doubling to a
// minute), until ctx ends. A target that fails never stops keyd: the
// error is reported and the rotation gate waits.
func (p *Publisher) Run(ctx context.Context) error {
	interval := p.Spec.Interval
	if interval <= 0 {
		interval = 10 * time.Minute
	}
	lastForced, backoff, retryAt := time.Time{}, time.Second, time.Time{}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		now := p.now()
		if now.After(retryAt) || retryAt.IsZero() {
			force := now.Sub(lastForced) >= interval
			octx, cancel := context.WithTimeout(ctx, cmp.Or(p.Spec.Timeout, DefaultTimeout))
			err := p.Once(octx, force)
			cancel()
			switch {
			case err == nil:
				backoff, retryAt = time.Second, time.Time{}
				if force {
					lastForced = now
				}
			case ctx.Err() != nil:
				return nil
			default:
				retryAt = now.Add(backoff)
				backoff = min(2*backoff, time.Minute)
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

func fingerprint(d *Documents) string {
	var b bytes.Buffer
	for _, name := range slices.Sorted(maps.Keys(d.Files)) {
		b.WriteString(name)
		b.WriteByte(0)
		b.Write(d.Files[name])
		b.WriteByte(0)
	}
	b.WriteString(d.CacheControl)
	return b.String()
}
