package rotation_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keyd-dev/keyd/keystore"
	"github.com/keyd-dev/keyd/keystore/keystoretest"
	"github.com/keyd-dev/keyd/rotation"
	"github.com/keyd-dev/keyd/signer"
	"github.com/keyd-dev/keyd/tokenstate/records"
)

// gatedCustody holds ES256 keys in this process, as an HSM would hold
// them elsewhere, and can be made to hang in Destroy: a custody that
// stops answering in the middle of a key set's transition.
type gatedCustody struct {
	mu      sync.Mutex
	keys    map[string]*ecdsa.PrivateKey
	blocked chan struct{} // closed: Destroy answers
	entered chan string   // a Destroy that hangs says which ref
}

func newGatedCustody() *gatedCustody {
	c := &gatedCustody{keys: map[string]*ecdsa.PrivateKey{}, blocked: make(chan struct{}), entered: make(chan string, 16)}
	close(c.blocked)
	return c
}

func (c *gatedCustody) hang() { c.blocked = make(chan struct{}) }

func (c *gatedCustody) answer() { close(c.blocked) }

func (c *gatedCustody) Name() string { return "gated" }

func (c *gatedCustody) Create(_ context.Context, keyset string, alg keystore.Algorithm, _ int) (string, crypto.PublicKey, error) {
	if alg != keystore.ES256 {
		return "", nil, fmt.Errorf("gated custody: only ES256")
	}
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", nil, err
	}
	id := make([]byte, 8)
	_, _ = rand.Read(id)
	ref := keyset + "-" + hex.EncodeToString(id)
	c.mu.Lock()
	c.keys[ref] = k
	c.mu.Unlock()
	return ref, k.Public(), nil
}

func (c *gatedCustody) Signer(ref string, _ crypto.PublicKey) (crypto.Signer, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	k, ok := c.keys[ref]
	if !ok {
		return nil, fmt.Errorf("gated custody: no key %s", ref)
	}
	return k, nil
}

func (c *gatedCustody) Destroy(ctx context.Context, ref string) error {
	select {
	case <-c.blocked:
	default:
		c.entered <- ref
		select {
		case <-c.blocked:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	c.mu.Lock()
	delete(c.keys, ref)
	c.mu.Unlock()
	return nil
}

func (c *gatedCustody) Owns(keyset, ref string) bool {
	rest, ok := strings.CutPrefix(ref, keyset+"-")
	return ok && keystore.IsRef(rest, 8)
}

// TestSlowCustodyStallsOnlyItsKeySet: while one key set's custody hangs in
// the middle of a revocation (its key set's lock held), every other key
// set rotates, revokes keys and tokens, ticks, signs and verifies, the
// store is polled and the config reloads. Before locks were per key set,
// each of these waited for the custody.
func TestSlowCustodyStallsOnlyItsKeySet(t *testing.T) {
	ctx := context.Background()
	c := &clock{t: time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)}
	store := openStore(t, filepath.Join(t.TempDir(), "keyd.db"))
	defer store.Close()
	custody := newGatedCustody()
	slow, fast := policy(keystore.ES256), policy(keystore.ES256)
	slow.Name, slow.Custody, fast.Name = "slow", custody, "fast"
	sg := signer.New(c.now, nil)
	policies := []keystore.Policy{slow, fast}
	m := rotation.NewManager(rotation.Options{Store: store, Policies: policies, Generator: keystoretest.FastGenerator, Now: c.now,
		Listeners: []rotation.Listener{sg}, TokenState: records.New(store), Revocations: sg.Revocations()})
	if err := m.Start(ctx); err != nil {
		t.Fatal(err)
	}
	ks, _, _ := m.KeySet("slow")
	pending, _ := ks.Pending()

	custody.hang()
	slowDone := make(chan error, 1)
	go func() {
		_, err := m.Revoke(ctx, "slow", pending.ID) // destroys the key in its custody, which hangs
		slowDone <- err
	}()
	if ref := <-custody.entered; ref != pending.Ref() {
		t.Fatalf("custody asked to destroy %s, want the revoked key's %s", ref, pending.Ref())
	}

	others := make(chan error, 1)
	go func() { others <- everythingElse(ctx, m, sg, c, policies) }()
	select {
	case err := <-others:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the other key set waited for the hanging custody")
	}
	select {
	case err := <-slowDone:
		t.Fatalf("the revocation finished while its custody hung: %v", err)
	default:
	}

	custody.answer()
	if err := <-slowDone; err != nil {
		t.Fatal(err)
	}
	ks, _, _ = m.KeySet("slow")
	if k, _ := ks.Key(pending.ID); k.State != keystore.StateRevoked {
		t.Errorf("the slow key set's pending key is %s after its revocation", k.State)
	}
	if next, ok := ks.Pending(); !ok || next.ID == pending.ID {
		t.Error("the slow key set has no new pending key")
	}
}

// everythingElse is what the fast key set and the daemon do meanwhile.
func everythingElse(ctx context.Context, m *rotation.Manager, sg *signer.Signer, c *clock, policies []keystore.Policy) error {
	before, _, _ := m.KeySet("fast")
	if _, err := m.Rotate(ctx, "fast", true); err != nil {
		return fmt.Errorf("rotate: %w", err)
	}
	pending, _ := before.Pending()
	if _, err := m.Revoke(ctx, "fast", pending.ID); err != nil {
		return fmt.Errorf("revoke key: %w", err)
	}
	if _, err := m.RevokeToken(ctx, "fast", "stolen", c.now().Add(time.Hour), "test"); err != nil {
		return fmt.Errorf("revoke token: %w", err)
	}
	c.t = c.t.Add(25 * time.Hour) // due again: the tick rotates
	if plan, err := m.Tick(ctx, "fast"); err != nil || !plan.Rotate {
		return fmt.Errorf("tick: %+v %v", plan, err)
	}
	if err := m.Refresh(ctx); err != nil {
		return fmt.Errorf("refresh: %w", err)
	}
	if err := m.Reconfigure(ctx, policies); err != nil {
		return fmt.Errorf("reload: %w", err)
	}
	tok, err := sg.Sign("fast", nil, 0)
	if err != nil {
		return fmt.Errorf("sign: %w", err)
	}
	_, err = sg.Verify("fast", tok.Token, signer.Expect{})
	return err
}

// TestReloadsNeverUndoRotations: reloads and rotations racing leave the
// key set loaded at its newest version with the newest settings: a reload
// publishes every key set again, and must not publish one it read before
// a rotation wrote a newer one.
func TestReloadsNeverUndoRotations(t *testing.T) {
	ctx := context.Background()
	c := &clock{t: time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)}
	store := openStore(t, filepath.Join(t.TempDir(), "keyd.db"))
	defer store.Close()
	p := policy(keystore.ES256)
	m, sg := start(t, store, c, p)
	var wg sync.WaitGroup
	wg.Go(func() {
		for range 40 {
			if _, err := m.Rotate(ctx, p.Name, true); err != nil {
				t.Error(err)
			}
		}
	})
	var last keystore.Policy
	wg.Go(func() {
		for i := range 40 {
			last = p
			last.Issuer = fmt.Sprintf("https://keyd.test/%d", i)
			if err := m.Reconfigure(ctx, []keystore.Policy{last}); err != nil {
				t.Error(err)
			}
		}
	})
	wg.Wait()
	stored, err := store.Get(ctx, p.Name)
	if err != nil {
		t.Fatal(err)
	}
	loaded, lp, _ := m.KeySet(p.Name)
	if loaded.Version != stored.Version || lp.Issuer != last.Issuer {
		t.Fatalf("loaded version %d with issuer %q, stored %d, last reload %q", loaded.Version, lp.Issuer, stored.Version, last.Issuer)
	}
	active, _ := stored.Active()
	tok, err := sg.Sign(p.Name, nil, 0)
	if err != nil || tok.KID != active.ID {
		t.Fatalf("signs with %s (%v), the stored active key is %s", tok.KID, err, active.ID)
	}
	v, err := sg.Verify(p.Name, tok.Token, signer.Expect{Issuer: last.Issuer})
	if err != nil {
		t.Fatalf("the token does not carry the last reload's issuer: %v %v", v, err)
	}
}
