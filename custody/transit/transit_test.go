package transit_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/sha256"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	vaultapi "github.com/hashicorp/vault/api"

	"github.com/keyd-dev/keyd/backends/file"
	"github.com/keyd-dev/keyd/custody/custodytest"
	"github.com/keyd-dev/keyd/custody/transit"
	"github.com/keyd-dev/keyd/internal/testvault"
	"github.com/keyd-dev/keyd/keystore"
	"github.com/keyd-dev/keyd/rotation"
	"github.com/keyd-dev/keyd/signer"
)

// client is a root client of a fresh OpenBao with a Transit mount;
// configure (optional) adjusts its config first.
func client(t testing.TB, configure ...func(*vaultapi.Config)) *vaultapi.Client {
	c := testvault.Start(t).RootClient(t, configure...)
	if err := c.Sys().Mount("transit", &vaultapi.MountInput{Type: "transit"}); err != nil {
		t.Fatal(err)
	}
	return c
}

// The suite on a real OpenBao's Transit engine, every algorithm keyd
// offers with it.
func TestConformance(t *testing.T) {
	c := transit.New(client(t), "transit", "keyd-")
	custodytest.Run(t, c, []keystore.Algorithm{keystore.ES256, keystore.ES384, keystore.ES512, keystore.EdDSA, keystore.RS256, keystore.PS256, keystore.HS256, keystore.HS512})
}

// Transit keys are not exportable, and each keyd key is a Transit key of
// its own: destroying one leaves the other.
func TestKeysAreNotExportableAndApart(t *testing.T) {
	vc := client(t)
	c := transit.New(vc, "", "")
	ctx := context.Background()
	a, _, err := c.Create(ctx, "app", keystore.ES256, 0)
	if err != nil {
		t.Fatal(err)
	}
	b, _, err := c.Create(ctx, "app", keystore.ES256, 0)
	if err != nil {
		t.Fatal(err)
	}
	s, err := vc.Logical().Read("transit/keys/" + a)
	if err != nil || s.Data["exportable"] != false || s.Data["deletion_allowed"] != false {
		t.Fatalf("key %s: %v %v", a, s.Data, err)
	}
	if _, err := vc.Logical().Read("transit/export/signing-key/" + a); err == nil {
		t.Fatal("a keyd key was exported from Transit")
	}
	if err := c.Destroy(ctx, a); err != nil {
		t.Fatal(err)
	}
	names, err := c.Keys(ctx, "app")
	if err != nil || len(names) != 1 || names[0] != b {
		t.Fatalf("after destroying %s: %v %v", a, names, err)
	}
}

// openStore is a bbolt store of its own for t.
func openStore(t *testing.T) *file.Store {
	t.Helper()
	store, err := file.Open(file.Options{Path: filepath.Join(t.TempDir(), "keyd.db"), MasterKey: make([]byte, 32)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	return store
}

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

// The lifecycle with keys in Transit, on an injected clock: the hourly
// rotation makes a Transit key for the new pending key; a retired key's
// Transit key is deleted when its grace ends, not before; the key set
// never points at a missing Transit key.
func TestLifecycleDestroysTransitKeys(t *testing.T) {
	vc := client(t)
	c := transit.New(vc, "", "")
	ctx := context.Background()
	store := openStore(t)
	clk := &clock{t: time.Date(2026, 11, 2, 0, 0, 0, 0, time.UTC)}
	p := keystore.Policy{Name: "app", Algorithm: keystore.ES256, Rotation: "0 * * * *", TokenTTL: 15 * time.Minute, JWKSMaxAge: 5 * time.Minute, Leeway: time.Minute, Custody: c}
	sg := signer.New(clk.now, nil)
	m := rotation.NewManager(rotation.Options{Store: store, Policies: []keystore.Policy{p}, Now: clk.now, Listeners: []rotation.Listener{sg}})
	if err := m.Start(ctx); err != nil {
		t.Fatal(err)
	}
	names := func() []string {
		t.Helper()
		n, err := c.Keys(ctx, "app")
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	refs := func() []string {
		ks, _, _ := m.KeySet("app")
		var out []string
		for _, k := range ks.Keys {
			out = append(out, k.Ref())
		}
		return out
	}
	same := func(a, b []string) bool {
		return fmt.Sprint(slices.Sorted(slices.Values(a))) == fmt.Sprint(slices.Sorted(slices.Values(b)))
	}
	if !same(names(), refs()) || len(refs()) != 2 {
		t.Fatalf("after the start: Transit %v, key set %v", names(), refs())
	}
	first := refs()[0]
	clk.t = clk.t.Add(time.Hour) // the rotation: a third key
	if _, err := m.Tick(ctx, "app"); err != nil {
		t.Fatal(err)
	}
	if !same(names(), refs()) || len(refs()) != 3 {
		t.Fatalf("after the rotation: Transit %v, key set %v", names(), refs())
	}
	if _, err := sg.Sign("app", signer.Claims{"sub": []byte(`"x"`)}, 0); err != nil {
		t.Fatalf("sign after the rotation: %v", err)
	}
	clk.t = clk.t.Add(p.Grace() - time.Minute) // the retired key's grace: not over yet
	if _, err := m.Tick(ctx, "app"); err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(names(), first) {
		t.Fatal("the retired key's Transit key was deleted before its grace ended")
	}
	clk.t = clk.t.Add(2 * time.Minute)
	if _, err := m.Tick(ctx, "app"); err != nil {
		t.Fatal(err)
	}
	if slices.Contains(names(), first) || !same(names(), refs()) || len(refs()) != 2 {
		t.Fatalf("after the grace: Transit %v, key set %v (first %s)", names(), refs(), first)
	}
}

// A Transit key made and never stored (keyd killed between the two) is
// found at start: left alone while young (another replica may be storing
// it), deleted once older than rotation.OrphanAge; the key set's own keys
// are never touched.
func TestStartSweepsOrphans(t *testing.T) {
	vc := client(t)
	c := transit.New(vc, "", "")
	ctx := context.Background()
	orphan, _, err := c.Create(ctx, "app", keystore.ES256, 0)
	if err != nil {
		t.Fatal(err)
	}
	store := openStore(t)
	p := keystore.Policy{Name: "app", Algorithm: keystore.ES256, Rotation: "@daily", TokenTTL: 15 * time.Minute, JWKSMaxAge: 5 * time.Minute, Leeway: time.Minute, Custody: c}
	start := func(now time.Time) {
		t.Helper()
		m := rotation.NewManager(rotation.Options{Store: store, Policies: []keystore.Policy{p}, Now: func() time.Time { return now }})
		if err := m.Start(ctx); err != nil {
			t.Fatal(err)
		}
	}
	start(time.Now())
	if names, _ := c.Keys(ctx, "app"); len(names) != 3 || !slices.Contains(names, orphan) {
		t.Fatalf("a young orphan was deleted: %v", names)
	}
	start(time.Now().Add(rotation.OrphanAge + time.Minute))
	names, _ := c.Keys(ctx, "app")
	if len(names) != 2 || slices.Contains(names, orphan) {
		t.Fatalf("after the orphan's age: %v (orphan %s)", names, orphan)
	}
	ks, err := store.Get(ctx, "app")
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range ks.Keys {
		if !slices.Contains(names, k.Ref()) {
			t.Fatalf("the key set's key %s lost its Transit key", k.ID)
		}
	}
}

// BenchmarkSign signs through Transit from 32 goroutines: keyd's side of
// each signature (the profile shows where it goes).
func BenchmarkSign(b *testing.B) {
	vc := client(b)
	c := transit.New(vc, "", "")
	ref, pub, err := c.Create(context.Background(), "bench", keystore.ES256, 0)
	if err != nil {
		b.Fatal(err)
	}
	s, _ := c.Signer(ref, pub)
	digest := make([]byte, 32)
	b.SetParallelism(16)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := s.Sign(nil, digest, crypto.SHA256); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// countingClient is a client of a fresh OpenBao with a Transit mount
// that counts the requests it sends.
func countingClient(t *testing.T) (*vaultapi.Client, *counting) {
	cnt := &counting{}
	vc := client(t, func(cfg *vaultapi.Config) {
		cnt.next = cfg.HttpClient.Transport
		cfg.HttpClient.Transport = cnt
	})
	return vc, cnt
}

// counting counts the requests that reach Vault.
type counting struct {
	next http.RoundTripper
	n    atomic.Int64
}

func (c *counting) RoundTrip(r *http.Request) (*http.Response, error) {
	c.n.Add(1)
	return c.next.RoundTrip(r)
}

// Signatures asked for at once with one key leave together: 200
// concurrent signatures of 200 different digests with one request in
// flight take far fewer than 200 requests, and each caller gets the
// signature of its own digest (RS256 and HS256 alike); a lone signature
// leaves at once, in a request of its own.
func TestConcurrentSignaturesLeaveTogether(t *testing.T) {
	vc, cnt := countingClient(t)
	c := transit.New(vc, "", "")
	c.MaxInFlight = 1
	ctx := context.Background()
	for _, alg := range []keystore.Algorithm{keystore.ES256, keystore.PS256, keystore.HS256} {
		ref, pub, err := c.Create(ctx, "app", alg, 2048)
		if err != nil {
			t.Fatal(err)
		}
		key := keystore.Key{ID: "k", Algorithm: alg, Custody: transit.Name, Material: keystore.Material(ref)}
		var sum func(input []byte) ([]byte, error)
		var check func(input, sig []byte) bool
		if alg.Symmetric() {
			m, err := key.CustodyMAC(c)
			if err != nil {
				t.Fatal(err)
			}
			sum = m.Sum
			check = func(input, mac []byte) bool { // a MAC of its own input: the same again
				again, err := m.Sum(input)
				return err == nil && string(again) == string(mac)
			}
		} else {
			s, err := c.Signer(ref, pub)
			if err != nil {
				t.Fatal(err)
			}
			var opts crypto.SignerOpts = crypto.SHA256
			if alg == keystore.PS256 {
				opts = &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: crypto.SHA256}
			}
			sum = func(input []byte) ([]byte, error) {
				d := sha256.Sum256(input)
				return s.Sign(nil, d[:], opts)
			}
			check = func(input, sig []byte) bool {
				d := sha256.Sum256(input)
				switch pub := pub.(type) {
				case *ecdsa.PublicKey:
					return ecdsa.VerifyASN1(pub, d[:], sig)
				case *rsa.PublicKey:
					return rsa.VerifyPSS(pub, crypto.SHA256, d[:], sig, opts.(*rsa.PSSOptions)) == nil
				}
				return false
			}
		}
		// The first use reads the Transit key once (checked against what
		// keyd stored); signatures from then on are a request each.
		before := cnt.n.Load()
		if _, err := sum([]byte("first")); err != nil {
			t.Fatal(err)
		}
		if n := cnt.n.Load() - before; n != 2 {
			t.Fatalf("%s: the first signature took %d requests, want the key's check and the signature", alg, n)
		}
		before = cnt.n.Load()
		if _, err := sum([]byte("alone")); err != nil {
			t.Fatal(err)
		}
		if n := cnt.n.Load() - before; n != 1 {
			t.Fatalf("%s: a lone signature took %d requests", alg, n)
		}
		const calls = 200
		inputs := make([][]byte, calls)
		outs := make([][]byte, calls)
		errs := make([]error, calls)
		before = cnt.n.Load()
		var wg sync.WaitGroup
		for i := range calls {
			inputs[i] = fmt.Appendf(nil, "input %d", i)
			wg.Go(func() { outs[i], errs[i] = sum(inputs[i]) })
		}
		wg.Wait()
		requests := cnt.n.Load() - before
		for i := range calls {
			if errs[i] != nil {
				t.Fatalf("%s: signature %d: %v", alg, i, errs[i])
			}
			if !check(inputs[i], outs[i]) {
				t.Fatalf("%s: signature %d is not of its own input", alg, i)
			}
		}
		if requests >= calls/2 {
			t.Fatalf("%s: %d concurrent signatures took %d requests", alg, calls, requests)
		}
		t.Logf("%s: %d concurrent signatures in %d requests", alg, calls, requests)
	}
}

// A batch of tokens signed with a Transit key costs Transit a few
// requests, not one per token; each token verifies, and an item that
// cannot be signed gets its own error in its place.
func TestBatchSignsInFewRequests(t *testing.T) {
	vc, cnt := countingClient(t)
	c := transit.New(vc, "", "")
	ctx := context.Background()
	store := openStore(t)
	p := keystore.Policy{Name: "app", Algorithm: keystore.ES256, Rotation: "@daily", TokenTTL: 15 * time.Minute, JWKSMaxAge: 5 * time.Minute, Leeway: time.Minute, Custody: c}
	sg := signer.New(time.Now, nil)
	m := rotation.NewManager(rotation.Options{Store: store, Policies: []keystore.Policy{p}, Now: time.Now, Listeners: []rotation.Listener{sg}})
	if err := m.Start(ctx); err != nil {
		t.Fatal(err)
	}
	b, err := sg.Batch("app")
	if err != nil {
		t.Fatal(err)
	}
	items := make([]signer.Item, 100)
	for i := range items {
		items[i].Claims = signer.Claims{"sub": fmt.Appendf(nil, `"user-%d"`, i)}
	}
	items[50].Claims["exp"] = []byte(`"tomorrow"`)
	before := cnt.n.Load()
	toks, errs := b.SignAll(items)
	requests := cnt.n.Load() - before
	if requests > 40 {
		t.Fatalf("a batch of 100 took %d Transit requests", requests)
	}
	t.Logf("a batch of 100 in %d Transit requests", requests)
	jtis := map[string]bool{}
	for i, tok := range toks {
		if i == 50 {
			if tok != nil || !errors.Is(errs[i], signer.ErrInvalidRequest) {
				t.Fatalf("item 50 (a bad exp): %v %v", tok, errs[i])
			}
			continue
		}
		if errs[i] != nil {
			t.Fatalf("item %d: %v", i, errs[i])
		}
		v, err := sg.Verify("app", tok.Token, signer.Expect{Subject: fmt.Sprintf("user-%d", i)})
		if err != nil {
			t.Fatalf("item %d does not verify: %v", i, err)
		}
		jtis[v.Claims["jti"].(string)] = true
	}
	if len(jtis) != 99 {
		t.Fatalf("%d distinct jti in 99 tokens", len(jtis))
	}
}

// The wrapper suite on a real OpenBao: two Transit keys made by Ensure.
func TestWrapperConformance(t *testing.T) {
	vc := client(t)
	ctx := context.Background()
	w, other := transit.NewWrapper(vc, "", "keyd-master"), transit.NewWrapper(vc, "transit", "keyd-other")
	for _, x := range []*transit.Wrapper{w, other} {
		if created, err := x.Ensure(ctx); err != nil || !created {
			t.Fatalf("Ensure = %v, %v", created, err)
		}
	}
	if created, err := w.Ensure(ctx); err != nil || created {
		t.Fatalf("Ensure of an existing key = %v, %v; want it kept", created, err)
	}
	custodytest.RunWrapper(t, w, other)
	// A version rotated in Transit: what was wrapped before still unwraps.
	old, err := w.Wrap(ctx, []byte("0123456789abcdef0123456789abcdef"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := vc.Logical().Write("transit/keys/keyd-master/rotate", nil); err != nil {
		t.Fatal(err)
	}
	if got, err := w.Unwrap(ctx, old); err != nil || string(got) != "0123456789abcdef0123456789abcdef" {
		t.Fatalf("after a Transit rotation: %q, %v", got, err)
	}
	if again, _ := w.Wrap(ctx, []byte("x")); !strings.HasPrefix(string(again), "vault:v2:") {
		t.Fatalf("a wrap after the rotation is %.9s, want vault:v2:", again)
	}
}
