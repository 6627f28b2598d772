package transit_test

// The second security review's Transit findings, each reproduced against a
// real OpenBao: the orphan sweep deleting another key set's keys, keys
// from the store not checked against their custody, Transit key versions
// not pinned.

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"os"
	"slices"
	"testing"
	"time"

	vaultapi "github.com/hashicorp/vault/api"

	"github.com/keyd-dev/keyd/backends/file"
	"github.com/keyd-dev/keyd/custody/transit"
	"github.com/keyd-dev/keyd/keystore"
	"github.com/keyd-dev/keyd/rotation"
	"github.com/keyd-dev/keyd/signer"
)

func policy(name string, c keystore.Custody) keystore.Policy {
	return keystore.Policy{Name: name, Algorithm: keystore.ES256, Rotation: "@daily", TokenTTL: 15 * time.Minute, JWKSMaxAge: 5 * time.Minute, Leeway: time.Minute, Custody: c}
}

// transitKeys are every key name of the mount.
func transitKeys(t *testing.T, vc *vaultapi.Client) []string {
	t.Helper()
	s, err := vc.Logical().List("transit/keys")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	if s != nil {
		for _, k := range s.Data["keys"].([]any) {
			out = append(out, k.(string))
		}
	}
	return out
}

// Key sets a and a-b in Transit custody, started in every order with the
// orphan age long past: no key of either is deleted (the sweep matched
// "keyd-a-" as a prefix and deleted a-b's keys as a's orphans).
func TestSweepKeepsOtherKeySetsKeys(t *testing.T) {
	vc := client(t)
	c := transit.New(vc, "", "")
	ctx := context.Background()
	store := openStore(t)
	at := time.Now()
	for _, names := range [][]string{{"a-b"}, {"a", "a-b"}, {"a"}, {"a-b", "a"}, {"a-b"}, {"a"}} {
		var ps []keystore.Policy
		for _, n := range names {
			ps = append(ps, policy(n, c))
		}
		at = at.Add(rotation.OrphanAge + time.Minute)
		now := at
		m := rotation.NewManager(rotation.Options{Store: store, Policies: ps, Now: func() time.Time { return now }})
		if err := m.Start(ctx); err != nil {
			t.Fatalf("start with %v: %v", names, err)
		}
		have := transitKeys(t, vc)
		sets, err := store.List(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, ks := range sets {
			for _, k := range ks.Keys {
				if !slices.Contains(have, k.Ref()) {
					t.Fatalf("after a start with %v: key %s of key set %s lost its Transit key %s (Transit holds %v)", names, k.ID, ks.Name, k.Ref(), have)
				}
			}
		}
	}
	if got, _ := c.Keys(ctx, "a"); len(got) != 2 {
		t.Fatalf("key set a's Transit keys: %v, want its 2", got)
	}
}

// Owns is exact: the prefix, the key set, "-", 16 lowercase hex digits.
func TestOwnsIsExact(t *testing.T) {
	vc, err := vaultapi.NewClient(vaultapi.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	c := transit.New(vc, "", "keyd-")
	for ref, want := range map[string]bool{
		"keyd-a-0123456789abcdef":           true,
		"keyd-a-b-0123456789abcdef":         false, // key set a-b's
		"keyd-a-0123456789abcdef0":          false,
		"keyd-a-0123456789ABCDEF":           false,
		"payments-signing":                  false,
		"keyd-a-":                           false,
		"keyd-a-0123456789abcde":            false,
		"other-keyd-a-0123456789abcdef":     false,
		"keyd-a-0123456789abcdef/../x":      false,
		"keyd-a-b-0123456789abcdef-extra-0": false,
	} {
		if got := c.Owns("a", ref); got != want {
			t.Errorf("Owns(a, %q) = %v, want %v", ref, got, want)
		}
	}
	if !c.Owns("a-b", "keyd-a-b-0123456789abcdef") {
		t.Error("key set a-b does not own its own key")
	}
}

// plant writes k into key set name in the store behind keyd's back, as
// someone who can write the store (Vault's KV) but not Transit would.
func plant(t *testing.T, store *file.Store, name string, k keystore.Key) {
	t.Helper()
	ctx := context.Background()
	if _, err := keystore.Update(ctx, store, name, func(ks *keystore.KeySet) (*keystore.KeySet, error) {
		out := ks.Clone()
		if k.State == keystore.StateActive {
			for i := range out.Keys {
				if out.Keys[i].State == keystore.StateActive {
					out.Keys[i].State = keystore.StateRetired
					out.Keys[i].RetiredAt = k.CreatedAt
				}
			}
		}
		out.Keys = append(out.Keys, k)
		return out, nil
	}); err != nil {
		t.Fatal(err)
	}
}

// A store writer without Transit access adds (a) an active key with its
// own private key and no custody, (b) a key naming another application's
// Transit key: keyd refuses both, signs only with its own key, publishes
// neither, and revoking the foreign key destroys nothing of the other
// application's.
func TestForeignStoredKeysAreRefused(t *testing.T) {
	vc := client(t)
	c := transit.New(vc, "", "")
	ctx := context.Background()
	store := openStore(t)
	p := policy("app", c)
	sg := signer.New(time.Now, nil)
	var refused int
	m := rotation.NewManager(rotation.Options{Store: store, Policies: []keystore.Policy{p}, Listeners: []rotation.Listener{sg}, Refused: func(string) { refused++ }})
	if err := m.Start(ctx); err != nil {
		t.Fatal(err)
	}
	ks, _, _ := m.KeySet("app")
	own, _ := ks.Active()

	// (a) a software key, active, with the writer's private key.
	soft, err := keystore.Generate(keystore.GenerateMaterial, keystore.ES256, 0, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	soft.State = keystore.StateActive
	plant(t, store, "app", soft)
	if err := m.Refresh(ctx); !errors.Is(err, keystore.ErrForeignKey) {
		t.Fatalf("a reload with a software key in a Transit key set: %v, want ErrForeignKey", err)
	}
	if refused == 0 {
		t.Fatal("the refused key set was not counted")
	}
	tok, err := sg.Sign("app", signer.Claims{"sub": []byte(`"x"`)}, 0)
	if err != nil || tok.KID != own.ID {
		t.Fatalf("after the planted key: signed with %q (%v), want keyd's own %s", tok.KID, err, own.ID)
	}
	if cur, _, _ := m.KeySet("app"); func() bool { _, ok := cur.Key(soft.ID); return ok }() {
		t.Fatal("the planted key is in the loaded key set (and so the JWKS)")
	}
	m2 := rotation.NewManager(rotation.Options{Store: store, Policies: []keystore.Policy{p}})
	if err := m2.Start(ctx); !errors.Is(err, keystore.ErrForeignKey) {
		t.Fatalf("a start with the planted key: %v, want ErrForeignKey", err)
	}
	if _, err := m.Revoke(ctx, "app", soft.ID); err != nil {
		t.Fatalf("revoking the planted key (the operator's remedy): %v", err)
	}

	// (b) another application's Transit key, named by a retired key.
	if _, err := vc.Logical().Write("transit/keys/payments-signing", map[string]any{"type": "ecdsa-p256"}); err != nil {
		t.Fatal(err)
	}
	s, _ := vc.Logical().Read("transit/keys/payments-signing")
	pub, err := transitPublic(s)
	if err != nil {
		t.Fatal(err)
	}
	foreign, err := keystore.NewCustodyKey(keystore.ES256, transit.Name, "payments-signing", pub, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	foreign.State = keystore.StateRetired
	foreign.RetiredAt = time.Now()
	plant(t, store, "app", foreign)
	if err := m.Refresh(ctx); !errors.Is(err, keystore.ErrForeignKey) {
		t.Fatalf("a reload with another application's Transit key: %v, want ErrForeignKey", err)
	}
	if _, err := m.Revoke(ctx, "app", foreign.ID); err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(transitKeys(t, vc), "payments-signing") {
		t.Fatal("revoking the planted key deleted another application's Transit key")
	}
	if _, err := sg.Sign("app", signer.Claims{"sub": []byte(`"x"`)}, 0); err != nil {
		t.Fatalf("sign once the planted keys are revoked: %v", err)
	}
}

// transitPublic parses the public key of a Transit key's first version.
func transitPublic(s *vaultapi.Secret) (crypto.PublicKey, error) {
	return transit.PublicKeyOf("payments-signing", s.Data)
}

// A Transit key rotated behind keyd's back: a signer that already
// checked it keeps signing with version 1, the one keyd published; one
// made after the rotation refuses to sign. A key made exportable is
// refused too. Both are custody_unavailable and name the reason.
func TestTransitKeyChangedBehindKeydsBack(t *testing.T) {
	vc := client(t)
	c := transit.New(vc, "", "")
	ctx := context.Background()
	digest := sha256.Sum256([]byte("payload"))
	ref, pub, err := c.Create(ctx, "app", keystore.ES256, 0)
	if err != nil {
		t.Fatal(err)
	}
	before, _ := c.Signer(ref, pub)
	if _, err := before.Sign(nil, digest[:], crypto.SHA256); err != nil {
		t.Fatal(err)
	}
	if _, err := vc.Logical().Write("transit/keys/"+ref+"/rotate", nil); err != nil {
		t.Fatal(err)
	}
	sig, err := before.Sign(nil, digest[:], crypto.SHA256)
	if err != nil {
		t.Fatalf("sign after a rotation behind keyd's back: %v", err)
	}
	if !ecdsa.VerifyASN1(pub.(*ecdsa.PublicKey), digest[:], sig) {
		t.Fatal("after a rotation behind keyd's back, keyd signed with a version its JWKS lacks")
	}
	after, _ := c.Signer(ref, pub)
	if _, err := after.Sign(nil, digest[:], crypto.SHA256); !errors.Is(err, keystore.ErrForeignKey) || !errors.Is(err, keystore.ErrCustodyUnavailable) {
		t.Fatalf("a rotated Transit key's first signature: %v, want a refusal", err)
	}

	ref2, pub2, err := c.Create(ctx, "app", keystore.ES256, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := vc.Logical().Write("transit/keys/"+ref2+"/config", map[string]any{"exportable": true}); err != nil {
		t.Fatal(err)
	}
	s, _ := c.Signer(ref2, pub2)
	if _, err := s.Sign(nil, digest[:], crypto.SHA256); !errors.Is(err, keystore.ErrForeignKey) {
		t.Fatalf("an exportable Transit key's signature: %v, want a refusal", err)
	}

	// A stored public key that is not the Transit key's: refused.
	ref3, _, err := c.Create(ctx, "app", keystore.ES256, 0)
	if err != nil {
		t.Fatal(err)
	}
	s3, _ := c.Signer(ref3, pub)
	if _, err := s3.Sign(nil, digest[:], crypto.SHA256); !errors.Is(err, keystore.ErrForeignKey) {
		t.Fatalf("a Transit key whose public key is not the stored one: %v, want a refusal", err)
	}
}

// configs/vault-transit-policy.hcl is enough for everything the custody
// does (create, sign, MAC, list, destroy) and refuses what keyd never does:
// another application's key, export, backup.
func TestTransitLeastPrivilegePolicy(t *testing.T) {
	root := client(t)
	policy, err := os.ReadFile("../../configs/vault-transit-policy.hcl")
	if err != nil {
		t.Fatal(err)
	}
	if err := root.Sys().PutPolicy("keyd-transit", string(policy)); err != nil {
		t.Fatal(err)
	}
	tok, err := root.Auth().Token().Create(&vaultapi.TokenCreateRequest{Policies: []string{"keyd-transit"}, TTL: "1h", NoDefaultPolicy: true})
	if err != nil {
		t.Fatal(err)
	}
	vc, err := root.Clone()
	if err != nil {
		t.Fatal(err)
	}
	vc.SetToken(tok.Auth.ClientToken)
	c := transit.New(vc, "", "")
	ctx := context.Background()
	for _, alg := range []keystore.Algorithm{keystore.ES256, keystore.HS256} {
		ref, pub, err := c.Create(ctx, "app", alg, 0)
		if err != nil {
			t.Fatalf("%s: create under the policy: %v", alg, err)
		}
		k, err := keystore.NewCustodyKey(alg, transit.Name, ref, pub, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if alg.Symmetric() {
			m, err := k.CustodyMAC(c)
			if err == nil {
				_, err = m.Sum([]byte("x"))
			}
			if err != nil {
				t.Fatalf("MAC under the policy: %v", err)
			}
		} else {
			s, _ := k.CustodySigner(c)
			d := sha256.Sum256([]byte("x"))
			if _, err := s.Sign(nil, d[:], crypto.SHA256); err != nil {
				t.Fatalf("sign under the policy: %v", err)
			}
		}
		if objs, err := c.Objects(ctx, "app"); err != nil || len(objs) != 1 {
			t.Fatalf("list under the policy: %v %v", objs, err)
		}
		for _, path := range []string{"transit/backup/" + ref, "transit/export/signing-key/" + ref, "transit/export/hmac-key/" + ref} {
			if _, err := vc.Logical().Read(path); err == nil {
				t.Errorf("the policy allows %s", path)
			}
		}
		if err := c.Destroy(ctx, ref); err != nil {
			t.Fatalf("destroy under the policy: %v", err)
		}
	}
	if _, err := root.Logical().Write("transit/keys/payments-signing", map[string]any{"type": "ecdsa-p256"}); err != nil {
		t.Fatal(err)
	}
	if err := c.Destroy(ctx, "payments-signing"); err == nil {
		t.Error("the policy lets keyd delete another application's Transit key")
	}
	d := sha256.Sum256([]byte("x"))
	if _, err := vc.Logical().Write("transit/sign/payments-signing/sha2-256", map[string]any{"input": base64.StdEncoding.EncodeToString(d[:]), "prehashed": true}); err == nil {
		t.Error("the policy lets keyd sign with another application's Transit key")
	}
}
