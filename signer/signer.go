// Package signer signs JWTs with a key set's active key and verifies tokens
// against a key set's published (and HMAC) keys, all from memory.
//
// A [Signer] holds one immutable [keyring] per key set behind an atomic
// pointer: keys are parsed once, when [Signer.Load] is given a new version
// of a key set, and Sign and Verify take no lock and read no storage. Load
// swaps the whole map, so a request sees either the old or the new keys,
// never a mix.
package signer

import (
	"crypto"
	"encoding/json"
	"fmt"
	"maps"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwa"

	"github.com/keyd-dev/keyd/internal/parallel"
	"github.com/keyd-dev/keyd/keystore"
	"github.com/keyd-dev/keyd/tokenstate"
)

// Signer signs and verifies for every loaded key set.
type Signer struct {
	now   func() time.Time
	obs   Observer
	revs  *tokenstate.Index // token revocations of every key set
	mu    sync.Mutex        // serialises Load; readers never take it
	rings atomic.Pointer[map[string]*keyring]
}

// Observer is told the outcome of every sign and verify: metrics count
// them. KeySet is called when a key set is first loaded, so that the
// per-token calls find their counters without a lookup.
type Observer interface {
	KeySet(name string) KeySetObserver
}

// KeySetObserver counts one key set's outcomes. It must be safe for
// concurrent use and cheap: it runs on every request.
type KeySetObserver interface {
	Signed()
	// SignFailed is told the API code of a refused sign request:
	// "bad_request" or "internal".
	SignFailed(code string)
	// Verified is told "" for a valid token, else the failure code.
	Verified(code string)
	// LegacyVerified is told, besides Verified, of a valid token without a
	// kid that the key set's legacy key verified.
	LegacyVerified()
}

type noObserver struct{}

func (noObserver) KeySet(string) KeySetObserver { return noObserver{} }
func (noObserver) Signed()                      {}
func (noObserver) SignFailed(string)            {}
func (noObserver) Verified(string)              {}
func (noObserver) LegacyVerified()              {}

// keyring is one key set prepared for use; never modified once published.
// Everything that is the same for every token is computed here, once per
// version of the key set: the encoded protected header, the signing method
// bound to the active key, the encoded issuer.
type keyring struct {
	policy  keystore.Policy
	version uint64
	alg     keystore.Algorithm
	jwaAlg  jwa.SignatureAlgorithm
	kid     string // the active key's
	header  []byte // base64url of {"alg","kid","typ":"JWT"}
	method  method // signs with the active key
	// concurrency is how many tokens of a batch to sign at once: 1 for a
	// key keyd holds, what its custody takes for one held elsewhere.
	concurrency int
	sigSize     int                  // bytes of a signature, at most
	issuer      []byte               // the policy's issuer as a JSON string; nil if none
	verify      map[string]any       // kid -> public key or HMAC secret, for keys that verify
	until       map[string]time.Time // kid -> verify_until, for the keys that have one
	parsed      map[string]any       // kid -> parsed private key, reused by the next Load
	obs         KeySetObserver

	// The signed revocation list, re-signed as it ages or changes.
	list     atomic.Pointer[cachedList]
	listMu   sync.Mutex            // serialises signing the list and its deltas
	deltaMu  sync.Mutex            // guards deltas
	deltas   map[int64]*cachedList // by the Unix second they start at
	subKey   []byte                // the list's key for sub_hmac, from the active key
	name     string
	revs     *tokenstate.Index // the Signer's: revocations, one lookup per verification
	loadedAt time.Time         // when this version was loaded
	// legacySeen is when a token without a kid last verified with the
	// legacy key (Unix seconds), kept across versions of the key set.
	legacySeen *atomic.Int64
}

// New returns an empty Signer reading time from now and telling obs (nil:
// nobody) the outcomes.
func New(now func() time.Time, obs Observer) *Signer {
	if obs == nil {
		obs = noObserver{}
	}
	s := &Signer{now: now, obs: obs, revs: tokenstate.NewIndex()}
	s.revs.SetClock(now)
	s.rings.Store(&map[string]*keyring{})
	return s
}

// Load prepares ks, configured by p, for signing and verifying, replacing
// the previous version of the key set. Keys already parsed for the previous
// version are reused. A key set older than the loaded one is ignored.
func (s *Signer) Load(p keystore.Policy, ks *keystore.KeySet) error {
	return s.LoadAll([]keystore.Policy{p}, []*keystore.KeySet{ks})
}

// LoadAll loads many key sets at once, as Load does one
// (rotation.BatchListener): keys are parsed on every processor, and the map
// of keyrings is copied once, not once per key set.
func (s *Signer) LoadAll(ps []keystore.Policy, sets []*keystore.KeySet) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	next := maps.Clone(*s.rings.Load())
	rings := make([]*keyring, len(sets))
	err := parallel.Do(len(sets), func(i int) error {
		ks, old := sets[i], next[sets[i].Name]
		if old != nil && ks.Version != 0 && ks.Version < old.version {
			return nil
		}
		r, err := newKeyring(ps[i], ks, old, s.revs)
		if r != nil {
			r.loadedAt = s.now().UTC()
		}
		rings[i] = r
		return err
	})
	if err != nil {
		return err
	}
	for i, r := range rings {
		if r == nil {
			continue
		}
		if old := next[sets[i].Name]; old != nil {
			r.obs = old.obs
		} else {
			r.obs = s.obs.KeySet(sets[i].Name)
		}
		next[sets[i].Name] = r
	}
	s.rings.Store(&next)
	return nil
}

func newKeyring(p keystore.Policy, ks *keystore.KeySet, old *keyring, revs *tokenstate.Index) (*keyring, error) {
	if err := ks.Check(); err != nil {
		return nil, err
	}
	jwaAlg, ok := jwa.LookupSignatureAlgorithm(string(ks.Algorithm))
	if !ok {
		return nil, fmt.Errorf("%w: %s", keystore.ErrUnsupportedAlgorithm, ks.Algorithm)
	}
	r := &keyring{policy: p, version: ks.Version, alg: ks.Algorithm, jwaAlg: jwaAlg, verify: map[string]any{}, parsed: map[string]any{},
		legacySeen: new(atomic.Int64), name: ks.Name, revs: revs, deltas: map[int64]*cachedList{}}
	if old != nil {
		r.legacySeen = old.legacySeen
	}
	// Deltas of the revocation list reach back well past the JWKS's
	// lifetime, which verifiers poll at.
	revs.SetHorizon(ks.Name, max(tokenstate.DefaultHorizon, 12*p.JWKSMaxAge))
	var active any
	for _, k := range ks.Keys {
		if !k.Verifies() {
			continue
		}
		priv, reused := any(nil), false
		if old != nil {
			priv, reused = old.parsed[k.ID]
		}
		if !reused {
			var err error
			switch {
			case k.InCustody() && k.Algorithm.Symmetric():
				priv, err = k.CustodyMAC(p.Custody) // MACs (and verifies) by asking its custody
			case k.InCustody():
				priv, err = k.CustodySigner(p.Custody) // signs by asking its custody
			case k.PublicOnly:
				priv, err = k.VerificationKey() // verifies only: a public key
			default:
				priv, err = k.PrivateKey()
			}
			if err != nil {
				return nil, err
			}
		}
		r.parsed[k.ID] = priv
		if !k.VerifyUntil.IsZero() {
			if r.until == nil {
				r.until = map[string]time.Time{}
			}
			r.until[k.ID] = k.VerifyUntil
		}
		switch key := priv.(type) {
		case crypto.Signer:
			r.verify[k.ID] = key.Public()
		case []byte:
			// An HMAC secret verifies with the pooled hashers it signs
			// with (tokencheck compares the MACs in constant time).
			m, err := newMethod(ks.Algorithm, key)
			if err != nil {
				return nil, err
			}
			r.verify[k.ID] = macMethod(m)
		default:
			r.verify[k.ID] = priv
		}
		if k.State == keystore.StateActive {
			r.kid, active, r.concurrency = k.ID, priv, 1
			if k.InCustody() {
				r.concurrency = keystore.SignConcurrency(p.Custody)
			}
			r.subKey = listSubjectKey(k.Material, ks.Name, k.ID)
		}
	}
	return r, r.prepare(active)
}

// prepare computes what every token of the keyring shares.
func (r *keyring) prepare(active any) error {
	m, err := newMethod(r.alg, active)
	if err != nil {
		return err
	}
	header, err := json.Marshal(struct {
		Alg string `json:"alg"`
		KID string `json:"kid"`
		Typ string `json:"typ"`
	}{string(r.alg), r.kid, "JWT"})
	if err != nil {
		return err
	}
	r.method, r.sigSize, r.header = m, signatureSize(active), b64.AppendEncode(nil, header)
	if r.policy.Issuer != "" {
		if r.issuer, err = json.Marshal(r.policy.Issuer); err != nil {
			return err
		}
	}
	return nil
}

func (s *Signer) ring(name string) (*keyring, error) {
	r, ok := (*s.rings.Load())[name]
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrUnknownKeySet, name)
	}
	return r, nil
}

// Revocations is the index of token revocations the signer checks on
// every verification: the rotation manager writes to it.
func (s *Signer) Revocations() *tokenstate.Index { return s.revs }

// SubjectCutoff returns the cut-off of a subject revocation of the key set
// in force for sub: every token (and login) of sub issued at or before it
// is revoked. An in-memory lookup, as for verification.
func (s *Signer) SubjectCutoff(name, sub string) (time.Time, bool) {
	return s.revs.Cutoff(name, sub, s.now())
}

// LegacySeen is when a token without a kid last verified with the key
// set's legacy key (zero: not since keyd started): once it is long past,
// the legacy key can go.
func (s *Signer) LegacySeen(name string) time.Time {
	r, err := s.ring(name)
	if err != nil || r.legacySeen.Load() == 0 {
		return time.Time{}
	}
	return time.Unix(r.legacySeen.Load(), 0).UTC()
}
