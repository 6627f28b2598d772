package rotation_test

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keyd-dev/keyd/backends/file"
	"github.com/keyd-dev/keyd/keystore"
	"github.com/keyd-dev/keyd/keystore/keystoretest"
	"github.com/keyd-dev/keyd/rotation"
	"github.com/keyd-dev/keyd/signer"
)

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

var masterKey = make([]byte, 32)

func openStore(t *testing.T, path string) keystore.Store {
	t.Helper()
	s, err := file.Open(file.Options{Path: path, MasterKey: masterKey})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func policy(alg keystore.Algorithm) keystore.Policy {
	return keystore.Policy{Name: "default", Algorithm: alg, Rotation: "@daily", TokenTTL: 15 * time.Minute, JWKSMaxAge: 5 * time.Minute, Leeway: time.Minute}
}

func start(t *testing.T, store keystore.Store, c *clock, p keystore.Policy) (*rotation.Manager, *signer.Signer) {
	t.Helper()
	sg := signer.New(c.now, nil)
	m := rotation.NewManager(rotation.Options{Store: store, Policies: []keystore.Policy{p}, Generator: keystoretest.FastGenerator, Now: c.now, Listeners: []rotation.Listener{sg}})
	if err := m.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	return m, sg
}

func TestStartCreatesThenReloads(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keyd.db")
	c := &clock{t: time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)}
	store := openStore(t, path)
	m, sg := start(t, store, c, policy(keystore.ES256))
	ks, _, err := m.KeySet("default")
	if err != nil {
		t.Fatal(err)
	}
	active, _ := ks.Active()
	tok, err := sg.Sign("default", nil, 0)
	if err != nil || tok.KID != active.ID {
		t.Fatalf("sign after start: %v %v", tok, err)
	}
	_ = store.Close()

	store = openStore(t, path)
	defer store.Close()
	m2, sg2 := start(t, store, c, policy(keystore.ES256))
	ks2, _, _ := m2.KeySet("default")
	keystoretest.RequireSameKeys(t, ks2, ks)
	if _, err := sg2.Verify("default", tok.Token, signer.Expect{}); err != nil {
		t.Fatalf("token from before the restart: %v", err)
	}

	bad := rotation.NewManager(rotation.Options{Store: store, Policies: []keystore.Policy{policy(keystore.RS256)}, Now: c.now})
	if err := bad.Start(context.Background()); err == nil || !strings.Contains(err.Error(), "RS256") || !strings.Contains(err.Error(), "ES256") {
		t.Fatalf("algorithm change accepted: %v", err)
	}
}

func TestRotateWaitsForPublication(t *testing.T) {
	c := &clock{t: time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)}
	store := openStore(t, filepath.Join(t.TempDir(), "keyd.db"))
	defer store.Close()
	p := policy(keystore.EdDSA)
	m, sg := start(t, store, c, p)
	ks, _, _ := m.KeySet("default")
	pending, _ := ks.Pending()

	c.t = c.t.Add(p.JWKSMaxAge - time.Second)
	_, err := m.Rotate(context.Background(), "default", false)
	var early *rotation.TooEarlyError
	if !errors.As(err, &early) || !errors.Is(err, rotation.ErrTooEarly) {
		t.Fatalf("rotate too early = %v", err)
	}
	if want := pending.CreatedAt.Add(p.JWKSMaxAge); !early.SafeAt.Equal(want) || early.KID != pending.ID {
		t.Fatalf("safe at %v for %s, want %v for %s", early.SafeAt, early.KID, want, pending.ID)
	}
	if now, _, _ := m.KeySet("default"); now.Version != ks.Version {
		t.Fatal("refused rotation changed the key set")
	}

	c.t = c.t.Add(time.Second)
	rotated, err := m.Rotate(context.Background(), "default", false)
	if err != nil {
		t.Fatal(err)
	}
	if a, _ := rotated.Active(); a.ID != pending.ID {
		t.Fatalf("active = %s, want the old pending %s", a.ID, pending.ID)
	}
	if tok, _ := sg.Sign("default", nil, 0); tok.KID != pending.ID {
		t.Fatalf("signer not reloaded: signs with %s", tok.KID)
	}

	// The new pending key is brand new: only force rotates now.
	if _, err := m.Rotate(context.Background(), "default", false); !errors.Is(err, rotation.ErrTooEarly) {
		t.Fatalf("second rotation at once = %v", err)
	}
	forced, err := m.Rotate(context.Background(), "default", true)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(forced.Keys); n != 4 {
		t.Fatalf("%d keys after two rotations, want 4", n)
	}
	if _, err := m.Rotate(context.Background(), "nope", true); !errors.Is(err, rotation.ErrUnknownKeySet) {
		t.Fatalf("unknown key set: %v", err)
	}
}

func TestRevoke(t *testing.T) {
	c := &clock{t: time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)}
	store := openStore(t, filepath.Join(t.TempDir(), "keyd.db"))
	defer store.Close()
	m, sg := start(t, store, c, policy(keystore.HS256))
	ks, _, _ := m.KeySet("default")
	active, _ := ks.Active()
	pending, _ := ks.Pending()
	tok, _ := sg.Sign("default", nil, 0)

	out, err := m.Revoke(context.Background(), "default", active.ID)
	if err != nil {
		t.Fatal(err)
	}
	if a, _ := out.Active(); a.ID != pending.ID {
		t.Fatalf("revoking the active key promoted %s, want %s", a.ID, pending.ID)
	}
	if _, ok := out.Pending(); !ok {
		t.Fatal("no new pending key after revoking the active one")
	}
	if _, err := sg.Verify("default", tok.Token, signer.Expect{}); !errors.Is(err, signer.ErrInvalidToken) {
		t.Fatalf("token of a revoked key still verifies: %v", err)
	}
	if _, err := m.Revoke(context.Background(), "default", active.ID); !errors.Is(err, keystore.ErrInvalidTransition) {
		t.Fatalf("revoke twice = %v", err)
	}
	if _, err := m.Revoke(context.Background(), "default", "nope"); !errors.Is(err, keystore.ErrKeyNotFound) {
		t.Fatalf("revoke unknown kid = %v", err)
	}
	stored, _ := store.Get(context.Background(), "default")
	if stored.Version != out.Version {
		t.Fatalf("store at version %d, manager at %d", stored.Version, out.Version)
	}
}

func TestReconfigure(t *testing.T) {
	c := &clock{t: time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)}
	store := openStore(t, filepath.Join(t.TempDir(), "keyd.db"))
	defer store.Close()
	p := policy(keystore.ES256)
	m, sg := start(t, store, c, p)
	ctx := context.Background()

	// A longer token_ttl and a new key set.
	longer := p
	longer.TokenTTL = time.Hour
	extra := policy(keystore.EdDSA)
	extra.Name = "extra"
	if err := m.Reconfigure(ctx, []keystore.Policy{longer, extra}); err != nil {
		t.Fatal(err)
	}
	if _, err := sg.Sign("default", nil, 30*time.Minute); err != nil {
		t.Fatalf("the new token_ttl is not in force: %v", err)
	}
	if _, err := sg.Sign("extra", nil, 0); err != nil {
		t.Fatalf("the new key set does not sign: %v", err)
	}
	if _, err := store.Get(ctx, "extra"); err != nil {
		t.Fatalf("the new key set is not stored: %v", err)
	}
	if got := m.Names(); len(got) != 2 {
		t.Fatalf("Names = %v", got)
	}

	// Refused whole: an algorithm change, a removal, a bad schedule.
	changed := longer
	changed.Algorithm = keystore.ES384
	badSchedule := extra
	badSchedule.Rotation = "not cron"
	for name, ps := range map[string][]keystore.Policy{
		"algorithm":       {changed, extra},
		"removing":        {longer},
		"not cron":        {longer, badSchedule},
		"new key set bad": {longer, extra, {Name: "rsa", Algorithm: keystore.RS256, Rotation: "@daily", RSABits: 1000}},
	} {
		if err := m.Reconfigure(ctx, ps); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	_, got, _ := m.KeySet("default")
	if got.TokenTTL != time.Hour || len(m.Names()) != 2 {
		t.Fatalf("a refused reconfiguration changed the settings: %+v %v", got, m.Names())
	}
}
