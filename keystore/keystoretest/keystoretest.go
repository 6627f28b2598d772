// Package keystoretest is the conformance suite for keystore.Store: every
// backend's test calls Run with a constructor for a fresh, empty store, and
// must pass all of it. It also has helpers for tests elsewhere: a fast key
// generator and key set fixtures.
package keystoretest

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/keyd-dev/keyd/keystore"
)

// Run runs the conformance suite. newStore must return a fresh, empty store
// for each call; Run closes it.
func Run(t *testing.T, newStore func(t *testing.T) keystore.Store) {
	for _, c := range []struct {
		name  string
		check func(*testing.T, keystore.Store)
	}{
		{"GetMissing", getMissing},
		{"RoundTripEveryAlgorithm", roundTripEveryAlgorithm},
		{"RevocationsRoundTrip", revocationsRoundTrip},
		{"ImportedKeysRoundTrip", importedKeysRoundTrip},
		{"CreateTwiceConflicts", createTwiceConflicts},
		{"StaleWriteConflictsAndLosesNothing", staleWriteConflictsAndLosesNothing},
		{"UpdateOfMissingKeySet", updateOfMissingKeySet},
		{"InvalidKeySetRefused", invalidKeySetRefused},
		{"ListIsSortedAndComplete", listIsSortedAndComplete},
		{"ResultsShareNoMemory", resultsShareNoMemory},
		{"ConcurrentUpdatesLoseNothing", concurrentUpdatesLoseNothing},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := newStore(t)
			t.Cleanup(func() { _ = s.Close() })
			c.check(t, s)
		})
	}
}

func getMissing(t *testing.T, s keystore.Store) {
	ctx := context.Background()
	if _, err := s.Get(ctx, "nope"); !errors.Is(err, keystore.ErrNotFound) {
		t.Fatalf("Get(missing) = %v, want ErrNotFound", err)
	}
	sets, err := s.List(ctx)
	if err != nil || len(sets) != 0 {
		t.Fatalf("List on empty store = %v, %v; want nothing", sets, err)
	}
}

func roundTripEveryAlgorithm(t *testing.T, s keystore.Store) {
	ctx := context.Background()
	for _, alg := range keystore.Algorithms {
		want := KeySet(t, string(alg)+"-set", alg)
		stored, err := s.Put(ctx, want)
		if err != nil {
			t.Fatalf("Put(%s): %v", alg, err)
		}
		if stored.Version == 0 {
			t.Fatalf("Put(%s) returned version 0", alg)
		}
		got, err := s.Get(ctx, want.Name)
		if err != nil {
			t.Fatalf("Get(%s): %v", alg, err)
		}
		if got.Version != stored.Version {
			t.Errorf("%s: Get version %d, Put returned %d", alg, got.Version, stored.Version)
		}
		RequireSameKeys(t, got, want)
		for _, k := range got.Keys {
			if _, err := k.PrivateKey(); err != nil {
				t.Errorf("%s: stored key does not parse back: %v", alg, err)
			}
		}
	}
}

func revocationsRoundTrip(t *testing.T, s keystore.Store) {
	ctx := context.Background()
	now := time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)
	ks := KeySet(t, "revoked", keystore.ES256)
	ks.Revocations = keystore.Revocations{
		Tokens:   []keystore.TokenRevocation{{JTI: "j1", Expires: now.Add(time.Hour), RevokedAt: now, Reason: "stolen"}},
		Subjects: []keystore.SubjectRevocation{{Subject: "alice", Before: now, Until: now.Add(2 * time.Hour), RevokedAt: now}},
	}
	if _, err := s.Put(ctx, ks); err != nil {
		t.Fatal(err)
	}
	got, err := s.Get(ctx, "revoked")
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Revocations.Tokens) != 1 || len(got.Revocations.Subjects) != 1 ||
		got.Revocations.Tokens[0].JTI != "j1" || !got.Revocations.Tokens[0].Expires.Equal(now.Add(time.Hour)) || got.Revocations.Tokens[0].Reason != "stolen" ||
		got.Revocations.Subjects[0].Subject != "alice" || !got.Revocations.Subjects[0].Before.Equal(now) || !got.Revocations.Subjects[0].Until.Equal(now.Add(2*time.Hour)) {
		t.Fatalf("revocations after a round trip: %+v", got.Revocations)
	}
}

func importedKeysRoundTrip(t *testing.T, s keystore.Store) {
	ctx := context.Background()
	now := time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)
	ks := KeySet(t, "imported", keystore.ES256)
	priv := NewKey(t, keystore.ES256)
	pub, err := priv.VerificationKey()
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	public := keystore.Key{ID: "their-kid", Algorithm: keystore.ES256, Material: der, PublicOnly: true, VerifyUntil: now.Add(48 * time.Hour)}
	public.Certificate = []byte("certificate DER: stored as given")
	priv.ID = "key-2024"
	out, _, err := keystore.Import(ks, []keystore.Key{public, priv}, keystore.StateRetired, now)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Put(ctx, out); err != nil {
		t.Fatal(err)
	}
	got, err := s.Get(ctx, "imported")
	if err != nil {
		t.Fatal(err)
	}
	RequireSameKeys(t, got, out)
	k, _ := got.Key("their-kid")
	if !k.Imported || !k.PublicOnly || !k.VerifyUntil.Equal(now.Add(48*time.Hour)) || k.State != keystore.StateRetired ||
		string(k.Certificate) != "certificate DER: stored as given" {
		t.Fatalf("imported public key after a round trip: %+v", k)
	}
	if _, err := k.VerificationKey(); err != nil {
		t.Fatalf("imported public key does not parse back: %v", err)
	}
	if k, _ := got.Key("key-2024"); !k.Imported || k.PublicOnly {
		t.Fatalf("imported private key after a round trip: %+v", k)
	}
}

func createTwiceConflicts(t *testing.T, s keystore.Store) {
	ctx := context.Background()
	ks := KeySet(t, "twice", keystore.ES256)
	if _, err := s.Put(ctx, ks); err != nil {
		t.Fatal(err)
	}
	other := KeySet(t, "twice", keystore.ES256)
	if _, err := s.Put(ctx, other); !errors.Is(err, keystore.ErrConflict) {
		t.Fatalf("second create = %v, want ErrConflict", err)
	}
	got, err := s.Get(ctx, "twice")
	if err != nil {
		t.Fatal(err)
	}
	RequireSameKeys(t, got, ks)
}

func staleWriteConflictsAndLosesNothing(t *testing.T, s keystore.Store) {
	ctx := context.Background()
	v1, err := s.Put(ctx, KeySet(t, "cas", keystore.EdDSA))
	if err != nil {
		t.Fatal(err)
	}
	v2, err := s.Put(ctx, rotated(t, v1))
	if err != nil {
		t.Fatalf("Put at current version: %v", err)
	}
	if v2.Version <= v1.Version {
		t.Fatalf("version did not grow: %d then %d", v1.Version, v2.Version)
	}
	stale := rotated(t, v1) // based on v1, which is no longer current
	if _, err := s.Put(ctx, stale); !errors.Is(err, keystore.ErrConflict) {
		t.Fatalf("stale Put = %v, want ErrConflict", err)
	}
	got, err := s.Get(ctx, "cas")
	if err != nil {
		t.Fatal(err)
	}
	RequireSameKeys(t, got, v2)
	if got.Version != v2.Version {
		t.Fatalf("version after failed write = %d, want %d", got.Version, v2.Version)
	}
}

func updateOfMissingKeySet(t *testing.T, s keystore.Store) {
	ctx := context.Background()
	_, err := keystore.Update(ctx, s, "ghost", func(ks *keystore.KeySet) (*keystore.KeySet, error) { return ks, nil })
	if !errors.Is(err, keystore.ErrNotFound) {
		t.Fatalf("Update(missing) = %v, want ErrNotFound", err)
	}
}

func invalidKeySetRefused(t *testing.T, s keystore.Store) {
	ctx := context.Background()
	bad := KeySet(t, "bad", keystore.ES256)
	bad.Keys[1].State = keystore.StateActive // two active keys
	if _, err := s.Put(ctx, bad); !errors.Is(err, keystore.ErrCorrupt) {
		t.Fatalf("Put(two active keys) = %v, want ErrCorrupt", err)
	}
	if _, err := s.Get(ctx, "bad"); !errors.Is(err, keystore.ErrNotFound) {
		t.Fatalf("refused key set was stored: %v", err)
	}
}

func listIsSortedAndComplete(t *testing.T, s keystore.Store) {
	ctx := context.Background()
	names := []string{"zeta", "alpha", "mid"}
	for _, n := range names {
		if _, err := s.Put(ctx, KeySet(t, n, keystore.HS256)); err != nil {
			t.Fatal(err)
		}
	}
	sets, err := s.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, ks := range sets {
		got = append(got, ks.Name)
		if len(ks.Keys) != 2 || ks.Version == 0 {
			t.Errorf("List entry %s: %d keys, version %d", ks.Name, len(ks.Keys), ks.Version)
		}
	}
	if want := []string{"alpha", "mid", "zeta"}; !slices.Equal(got, want) {
		t.Fatalf("List names = %v, want %v", got, want)
	}
}

func resultsShareNoMemory(t *testing.T, s keystore.Store) {
	ctx := context.Background()
	stored, err := s.Put(ctx, KeySet(t, "alias", keystore.HS512))
	if err != nil {
		t.Fatal(err)
	}
	a, err := s.Get(ctx, "alias")
	if err != nil {
		t.Fatal(err)
	}
	a.Keys[0].Material[0] ^= 0xff
	a.Keys[0].State = keystore.StateRevoked
	b, err := s.Get(ctx, "alias")
	if err != nil {
		t.Fatal(err)
	}
	RequireSameKeys(t, b, stored)
}

func concurrentUpdatesLoseNothing(t *testing.T, s keystore.Store) {
	ctx := context.Background()
	if _, err := s.Put(ctx, KeySet(t, "race", keystore.ES256)); err != nil {
		t.Fatal(err)
	}
	const writers = 4
	const each = 3
	var wg sync.WaitGroup
	errs := make(chan error, writers*each)
	for range writers {
		wg.Go(func() {
			for range each {
				next := NewKey(t, keystore.ES256)
				_, err := keystore.Update(ctx, s, "race", func(ks *keystore.KeySet) (*keystore.KeySet, error) {
					return keystore.Rotate(ks, next, time.Now())
				})
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("concurrent Update: %v", err)
		}
	}
	got, err := s.Get(ctx, "race")
	if err != nil {
		t.Fatal(err)
	}
	if want := 2 + writers*each; len(got.Keys) != want {
		t.Fatalf("after %d rotations: %d keys, want %d (an update was lost)", writers*each, len(got.Keys), want)
	}
	if err := got.Check(); err != nil {
		t.Fatal(err)
	}
}

func rotated(t *testing.T, ks *keystore.KeySet) *keystore.KeySet {
	t.Helper()
	out, err := keystore.Rotate(ks, NewKey(t, ks.Algorithm), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// RequireSameKeys fails t unless got and want have the same name,
// algorithm, rotation time and keys (ids, states, timestamps, material).
func RequireSameKeys(t *testing.T, got, want *keystore.KeySet) {
	t.Helper()
	if got.Name != want.Name || got.Algorithm != want.Algorithm || !got.RotatedAt.Equal(want.RotatedAt) {
		t.Fatalf("key set header: got %s/%s/%v, want %s/%s/%v", got.Name, got.Algorithm, got.RotatedAt, want.Name, want.Algorithm, want.RotatedAt)
	}
	if len(got.Keys) != len(want.Keys) {
		t.Fatalf("%s: %d keys, want %d", got.Name, len(got.Keys), len(want.Keys))
	}
	for i, g := range got.Keys {
		w := want.Keys[i]
		if g.ID != w.ID || g.Algorithm != w.Algorithm || g.State != w.State ||
			!g.CreatedAt.Equal(w.CreatedAt) || !g.ActivatedAt.Equal(w.ActivatedAt) ||
			!g.RetiredAt.Equal(w.RetiredAt) || !g.RevokedAt.Equal(w.RevokedAt) {
			t.Fatalf("%s key %d: got %+v, want %+v", got.Name, i, g, w)
		}
		if !slices.Equal(g.Material, w.Material) {
			t.Fatalf("%s key %s: material differs", got.Name, g.ID)
		}
	}
}

// KeySet returns a fresh key set (one active, one pending key) made with
// FastGenerator.
func KeySet(t testing.TB, name string, alg keystore.Algorithm) *keystore.KeySet {
	t.Helper()
	now := time.Now().Truncate(time.Millisecond)
	ks, err := keystore.NewKeySet(name, alg, NewKey(t, alg), NewKey(t, alg), now)
	if err != nil {
		t.Fatal(err)
	}
	return ks
}

// NewKey returns a fresh pending key made with FastGenerator.
func NewKey(t testing.TB, alg keystore.Algorithm) keystore.Key {
	t.Helper()
	k, err := keystore.Generate(FastGenerator, alg, 0, time.Now().Truncate(time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// rsaPoolSize keys per RSA size are made once per process and handed out in
// turn, so tests stay fast; a key set sees a repeat only after this many
// rotations.
const rsaPoolSize = 24

var rsaPool = struct {
	sync.Mutex
	keys map[int][]keystore.Material
	next map[int]int
}{keys: map[int][]keystore.Material{}, next: map[int]int{}}

// FastGenerator is a keystore.Generator for tests: real keys from
// crypto/rand, but RSA keys come from a small per-process pool instead of
// being generated each time.
func FastGenerator(alg keystore.Algorithm, rsaBits int) (keystore.Material, error) {
	if alg.Family() != keystore.FamilyRSA {
		return keystore.GenerateMaterial(alg, rsaBits)
	}
	if rsaBits == 0 {
		rsaBits = keystore.DefaultRSABits
	}
	rsaPool.Lock()
	defer rsaPool.Unlock()
	if len(rsaPool.keys[rsaBits]) < rsaPoolSize {
		priv, err := rsa.GenerateKey(rand.Reader, rsaBits)
		if err != nil {
			return nil, fmt.Errorf("rsa pool: %w", err)
		}
		der, err := x509.MarshalPKCS8PrivateKey(priv)
		if err != nil {
			return nil, err
		}
		rsaPool.keys[rsaBits] = append(rsaPool.keys[rsaBits], der)
		return slices.Clone(keystore.Material(der)), nil
	}
	i := rsaPool.next[rsaBits] % rsaPoolSize
	rsaPool.next[rsaBits]++
	return slices.Clone(rsaPool.keys[rsaBits][i]), nil
}

// Clock is a clock tests move by hand, safe for concurrent use.
type Clock struct {
	mu sync.Mutex
	t  time.Time
}

// NewClock returns a Clock showing t.
func NewClock(t time.Time) *Clock { return &Clock{t: t} }

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// Add moves the clock by d.
func (c *Clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}
