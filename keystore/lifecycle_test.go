package keystore_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/keyd-dev/keyd/keystore"
	"github.com/keyd-dev/keyd/keystore/keystoretest"
)

var t0 = time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)

func states(ks *keystore.KeySet) string {
	var s []string
	for _, k := range ks.Keys {
		s = append(s, string(k.State))
	}
	return strings.Join(s, ",")
}

func TestNewKeySetEveryAlgorithm(t *testing.T) {
	for _, alg := range keystore.Algorithms {
		ks, err := keystore.NewKeySet("s", alg, keystoretest.NewKey(t, alg), keystoretest.NewKey(t, alg), t0)
		if err != nil {
			t.Fatalf("%s: %v", alg, err)
		}
		if got := states(ks); got != "active,pending" {
			t.Fatalf("%s: states %s", alg, got)
		}
		a, _ := ks.Active()
		if !a.ActivatedAt.Equal(t0) || !ks.RotatedAt.Equal(t0) {
			t.Fatalf("%s: activation time %v, rotated %v", alg, a.ActivatedAt, ks.RotatedAt)
		}
		p, _ := ks.Pending()
		if alg.Symmetric() == p.Published() {
			t.Fatalf("%s: pending published=%v", alg, p.Published())
		}
		if len(a.ID) < 22 || a.ID == p.ID {
			t.Fatalf("%s: kids %q %q", alg, a.ID, p.ID)
		}
	}
}

func TestRotate(t *testing.T) {
	ks := keystoretest.KeySet(t, "s", keystore.ES256)
	first, _ := ks.Active()
	second, _ := ks.Pending()
	next := keystoretest.NewKey(t, keystore.ES256)
	t1 := t0.Add(time.Hour)
	out, err := keystore.Rotate(ks, next, t1)
	if err != nil {
		t.Fatal(err)
	}
	if got := states(out); got != "retired,active,pending" {
		t.Fatalf("states after rotate: %s", got)
	}
	if a, _ := out.Active(); a.ID != second.ID || !a.ActivatedAt.Equal(t1) {
		t.Fatalf("active after rotate = %s at %v, want the old pending %s", a.ID, a.ActivatedAt, second.ID)
	}
	if r, _ := out.Key(first.ID); !r.RetiredAt.Equal(t1) || !r.Verifies() || !r.Published() {
		t.Fatalf("retired key %+v", r)
	}
	if p, _ := out.Pending(); p.ID != next.ID {
		t.Fatalf("pending = %s, want %s", p.ID, next.ID)
	}
	if !out.RotatedAt.Equal(t1) {
		t.Fatalf("RotatedAt = %v", out.RotatedAt)
	}
	if got := states(ks); got != "active,pending" {
		t.Fatalf("Rotate modified its input: %s", got)
	}
	if _, err := keystore.Rotate(out, next, t1); !errors.Is(err, keystore.ErrInvalidTransition) {
		t.Fatalf("Rotate with a kid already in the set = %v", err)
	}
	if _, err := keystore.Rotate(out, keystoretest.NewKey(t, keystore.ES384), t1); !errors.Is(err, keystore.ErrInvalidTransition) {
		t.Fatalf("Rotate with a key of another algorithm = %v", err)
	}
}

func TestRevoke(t *testing.T) {
	ks := keystoretest.KeySet(t, "s", keystore.EdDSA)
	active, _ := ks.Active()
	pending, _ := ks.Pending()
	next := keystoretest.NewKey(t, keystore.EdDSA)
	t1 := t0.Add(time.Minute)

	out, used, err := keystore.Revoke(ks, active.ID, next, t1)
	if err != nil || !used {
		t.Fatalf("revoke active: used=%v err=%v", used, err)
	}
	if got := states(out); got != "revoked,active,pending" {
		t.Fatalf("states after revoking active: %s", got)
	}
	if a, _ := out.Active(); a.ID != pending.ID {
		t.Fatalf("revoking the active key promoted %s, want %s", a.ID, pending.ID)
	}
	if r, _ := out.Key(active.ID); r.Published() || r.Verifies() || !r.RevokedAt.Equal(t1) {
		t.Fatalf("revoked key still published or verifying: %+v", r)
	}

	out2, used, err := keystore.Revoke(out, next.ID, keystoretest.NewKey(t, keystore.EdDSA), t1)
	if err != nil || !used || states(out2) != "revoked,active,revoked,pending" {
		t.Fatalf("revoke pending: used=%v err=%v states=%s", used, err, states(out2))
	}

	rot, _ := keystore.Rotate(ks, next, t1)
	out3, used, err := keystore.Revoke(rot, active.ID, keystoretest.NewKey(t, keystore.EdDSA), t1)
	if err != nil || used || states(out3) != "revoked,active,pending" {
		t.Fatalf("revoke retired: used=%v err=%v states=%s", used, err, states(out3))
	}

	if _, _, err := keystore.Revoke(out, active.ID, next, t1); !errors.Is(err, keystore.ErrInvalidTransition) {
		t.Fatalf("revoke twice = %v, want ErrInvalidTransition", err)
	}
	if _, _, err := keystore.Revoke(out, "nope", next, t1); !errors.Is(err, keystore.ErrKeyNotFound) {
		t.Fatalf("revoke unknown = %v, want ErrKeyNotFound", err)
	}
}

func TestPrune(t *testing.T) {
	ks := keystoretest.KeySet(t, "s", keystore.HS256)
	old, _ := ks.Active()
	ks, _ = keystore.Rotate(ks, keystoretest.NewKey(t, keystore.HS256), t0)
	grace := 30 * time.Minute
	if out, removed := keystore.Prune(ks, t0.Add(grace-time.Second), grace); out != ks || removed != nil {
		t.Fatalf("pruned %v before the grace ended", removed)
	}
	out, removed := keystore.Prune(ks, t0.Add(grace), grace)
	if len(removed) != 1 || removed[0] != old.ID {
		t.Fatalf("removed %v, want [%s]", removed, old.ID)
	}
	if _, ok := out.Key(old.ID); ok || states(out) != "active,pending" {
		t.Fatalf("after prune: %s", states(out))
	}
}

func TestCheck(t *testing.T) {
	good := keystoretest.KeySet(t, "s", keystore.ES256)
	cases := map[string]func(ks *keystore.KeySet){
		"no active":      func(ks *keystore.KeySet) { ks.Keys[0].State = keystore.StateRetired },
		"two pending":    func(ks *keystore.KeySet) { ks.Keys[0].State = keystore.StatePending },
		"bad state":      func(ks *keystore.KeySet) { ks.Keys[1].State = "floating" },
		"duplicate kid":  func(ks *keystore.KeySet) { ks.Keys[1].ID = ks.Keys[0].ID },
		"alg mismatch":   func(ks *keystore.KeySet) { ks.Keys[1].Algorithm = keystore.ES384 },
		"bad algorithm":  func(ks *keystore.KeySet) { ks.Algorithm = "none" },
		"empty material": func(ks *keystore.KeySet) { ks.Keys[1].Material = nil },
	}
	if err := good.Check(); err != nil {
		t.Fatal(err)
	}
	for name, breakIt := range cases {
		ks := good.Clone()
		breakIt(ks)
		if err := ks.Check(); !errors.Is(err, keystore.ErrCorrupt) {
			t.Errorf("%s: Check = %v, want ErrCorrupt", name, err)
		}
	}
}

func TestParseAlgorithm(t *testing.T) {
	for _, bad := range []string{"none", "", "es256", "HS1", "RS1024"} {
		_, err := keystore.ParseAlgorithm(bad)
		if !errors.Is(err, keystore.ErrUnsupportedAlgorithm) || !strings.Contains(err.Error(), "EdDSA") {
			t.Errorf("ParseAlgorithm(%q) = %v", bad, err)
		}
	}
	for _, a := range keystore.Algorithms {
		if got, err := keystore.ParseAlgorithm(string(a)); err != nil || got != a {
			t.Errorf("ParseAlgorithm(%s) = %v, %v", a, got, err)
		}
	}
}

func TestMaterialNeverPrints(t *testing.T) {
	k := keystoretest.NewKey(t, keystore.HS256)
	secret := string(k.Material)
	var logged bytes.Buffer
	slog.New(slog.NewJSONHandler(&logged, nil)).Info("key", "key", k, "material", k.Material)
	js, _ := json.Marshal(k)
	outputs := []string{
		fmt.Sprintf("%v %+v %#v %s %x %q", k, k, k, k.Material, k.Material, k.Material),
		logged.String(), string(js),
	}
	for _, out := range outputs {
		if strings.Contains(out, secret) || strings.Contains(out, fmt.Sprintf("%x", []byte(secret))) {
			t.Fatalf("secret leaked into %q", out)
		}
		if !strings.Contains(out, "[redacted]") {
			t.Fatalf("output %q does not show the redaction", out)
		}
	}
}

func TestPrivateKeyRejectsWrongCurve(t *testing.T) {
	k := keystoretest.NewKey(t, keystore.ES384)
	k.Algorithm = keystore.ES256
	if _, err := k.PrivateKey(); !errors.Is(err, keystore.ErrCorrupt) {
		t.Fatalf("P-384 key parsed as ES256: %v", err)
	}
	r := keystoretest.NewKey(t, keystore.RS256)
	r.Algorithm = keystore.ES256
	if _, err := r.PrivateKey(); !errors.Is(err, keystore.ErrCorrupt) {
		t.Fatalf("RSA key parsed as ES256: %v", err)
	}
}

func TestVerifyPolicyNarrow(t *testing.T) {
	vp := keystore.VerifyPolicy{Audience: []string{"a", "b"}, Issuer: "https://i", RequiredClaims: []string{"sub"}}
	got, err := vp.Narrow([]string{"b"}, "https://i", []string{"scope"})
	if err != nil || !slices.Equal(got.Audience, []string{"b"}) || got.Issuer != "https://i" || !slices.Equal(got.RequiredClaims, []string{"sub", "scope"}) {
		t.Fatalf("Narrow = %+v, %v", got, err)
	}
	if got, _ := vp.Narrow(nil, "", nil); !slices.Equal(got.Audience, vp.Audience) || got.Issuer != vp.Issuer {
		t.Fatalf("an empty request dropped the defaults: %+v", got)
	}
	for _, bad := range []func() error{
		func() error { _, err := vp.Narrow([]string{"c"}, "", nil); return err },
		func() error { _, err := vp.Narrow(nil, "https://other", nil); return err },
	} {
		if err := bad(); !errors.Is(err, keystore.ErrInvalidPolicy) {
			t.Errorf("widening accepted: %v", err)
		}
	}
	if got, err := (keystore.VerifyPolicy{}).Narrow([]string{"x"}, "https://y", nil); err != nil || got.Audience[0] != "x" || got.Issuer != "https://y" {
		t.Fatalf("no defaults: %+v %v", got, err)
	}
}
