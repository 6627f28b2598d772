package rotation_test

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"path/filepath"
	"testing"
	"time"

	"github.com/keyd-dev/keyd/certs"
	"github.com/keyd-dev/keyd/certs/certstest"
	"github.com/keyd-dev/keyd/keystore"
)

// TestCertificatesFollowTheLifecycle: with certificates configured, every
// published key carries one from the write that publishes it, the JWKS
// shows it as x5c and x5t#S256, it is renewed two thirds of the way
// through, and a new CA replaces every certificate.
func TestCertificatesFollowTheLifecycle(t *testing.T) {
	dir := t.TempDir()
	ca := certstest.NewCA(t, dir, "ca", t0)
	authority, err := certs.Load(ca.CertFile, ca.KeyFile, 3*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	p := hourly()
	p.Certificates = authority
	h := newHarness(t, p, filepath.Join(dir, "keyd.db"))

	certOf := func(kid string) *x509.Certificate {
		t.Helper()
		k, ok := h.keySet().Key(kid)
		if !ok {
			t.Fatalf("no key %s", kid)
		}
		c, err := x509.ParseCertificate(k.Certificate)
		if err != nil {
			t.Fatalf("key %s (%s): certificate: %v", kid, k.State, err)
		}
		return c
	}
	checkJWKS := func() {
		t.Helper()
		doc, _ := h.pub.KeySet("default")
		var set struct {
			Keys []struct {
				KID  string   `json:"kid"`
				X5C  []string `json:"x5c"`
				X5T2 string   `json:"x5t#S256"`
			} `json:"keys"`
		}
		if err := json.Unmarshal(doc.Body, &set); err != nil {
			t.Fatal(err)
		}
		for _, k := range set.Keys {
			c := certOf(k.KID)
			if len(k.X5C) != 2 || k.X5C[0] != base64.StdEncoding.EncodeToString(c.Raw) || k.X5C[1] != base64.StdEncoding.EncodeToString(ca.Cert.Raw) {
				t.Fatalf("key %s: x5c is not its certificate then the CA", k.KID)
			}
			sum := sha256.Sum256(c.Raw)
			if k.X5T2 != base64.RawURLEncoding.EncodeToString(sum[:]) {
				t.Fatalf("key %s: x5t#S256 %q", k.KID, k.X5T2)
			}
		}
	}

	ks := h.keySet()
	active, _ := ks.Active()
	pending, _ := ks.Pending()
	first := certOf(pending.ID)
	if err := certOf(active.ID).CheckSignatureFrom(ca.Cert); err != nil {
		t.Fatalf("the first key's certificate: %v", err)
	}
	checkJWKS()
	plan := h.tick()
	if len(plan.Certify) != 0 {
		t.Fatalf("certificates due right after the start: %v", plan.Certify)
	}

	// The hourly rotation publishes a new pending key, certified in the
	// same write.
	h.at(time.Hour)
	if plan = h.tick(); !plan.Rotate {
		t.Fatalf("no rotation: %+v", plan)
	}
	next, _ := h.keySet().Pending()
	if next.ID == pending.ID || len(next.Certificate) == 0 {
		t.Fatalf("the new pending key %s has no certificate", next.ID)
	}
	checkJWKS()

	// Renewal: due at two thirds of 3h05m after t0-5m, i.e. t0+1h58m20s;
	// the plan wakes for it.
	h.at(90 * time.Minute)
	if plan = h.tick(); !plan.NextCheck.Equal(t0.Add(time.Hour + 58*time.Minute + 20*time.Second)) {
		t.Fatalf("next check %v, want the renewal", plan.NextCheck)
	}
	h.at(time.Hour + 58*time.Minute + 20*time.Second)
	// The first active key was destroyed at 1h21m; the first pending key
	// (active now) is due, the one made at 1h is not.
	if plan = h.tick(); len(plan.Certify) != 1 || plan.Certify[0] != pending.ID {
		t.Fatalf("renewed %v", plan.Certify)
	}
	renewed := certOf(pending.ID)
	if renewed.SerialNumber.Cmp(first.SerialNumber) == 0 || !renewed.NotAfter.After(first.NotAfter) {
		t.Fatalf("not renewed: %v -> %v", first.NotAfter, renewed.NotAfter)
	}
	checkJWKS()

	// A new CA (a reload with other files) replaces every certificate at
	// the next tick.
	ca = certstest.NewCA(t, t.TempDir(), "ca2", t0)
	if p.Certificates, err = certs.Load(ca.CertFile, ca.KeyFile, 3*time.Hour); err != nil {
		t.Fatal(err)
	}
	if err := h.m.Reconfigure(context.Background(), []keystore.Policy{p}); err != nil {
		t.Fatal(err)
	}
	if plan = h.tick(); len(plan.Certify) != 2 {
		t.Fatalf("after a new CA: %v", plan.Certify)
	}
	for _, k := range h.keySet().Keys {
		if err := certOf(k.ID).CheckSignatureFrom(ca.Cert); err != nil {
			t.Fatalf("key %s not certified by the new CA: %v", k.ID, err)
		}
	}
	checkJWKS()
}

// TestSelfSignedSkipsPublicOnlyKeys: an imported public key cannot sign
// its own certificate; it stays without one, and is never due again.
func TestSelfSignedSkipsPublicOnlyKeys(t *testing.T) {
	p := hourly()
	p.Certificates = certs.SelfSigned(24 * time.Hour)
	h := newHarness(t, p, "")
	other := newHarness(t, hourly(), "") // another issuer's key
	theirs, _ := other.keySet().Active()
	pub, err := theirs.VerificationKey()
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKIXPublicKey(pub)
	imported := keystore.Key{ID: "theirs", Algorithm: keystore.ES256, Material: der, PublicOnly: true}
	if _, err := h.m.Import(context.Background(), "default", []keystore.Key{imported}, keystore.StateRetired, false); err != nil {
		t.Fatal(err)
	}
	if k, _ := h.keySet().Key("theirs"); len(k.Certificate) != 0 {
		t.Fatal("a public-only key got a self-signed certificate")
	}
	if plan := h.tick(); len(plan.Certify) != 0 {
		t.Fatalf("due: %v", plan.Certify)
	}
}

// An imported public key's kid was chosen by another issuer: under a CA it
// gets a certificate only when the key set says so (certificates.imported).
// It used to get one always, with its kid as the certificate's name.
func TestImportedKeysCertifiedOnlyWhenAsked(t *testing.T) {
	for _, asked := range []bool{false, true} {
		ca := certstest.NewCA(t, t.TempDir(), "ca", t0)
		authority, err := certs.Load(ca.CertFile, ca.KeyFile, 3*time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		authority.Imported = asked
		p := hourly()
		p.Certificates = authority
		h := newHarness(t, p, "")
		theirs, _ := newHarness(t, hourly(), "").keySet().Active()
		pub, err := theirs.VerificationKey()
		if err != nil {
			t.Fatal(err)
		}
		der, _ := x509.MarshalPKIXPublicKey(pub)
		imported := keystore.Key{ID: "*.corp.example.com", Algorithm: keystore.ES256, Material: der, PublicOnly: true}
		if _, err := h.m.Import(context.Background(), "default", []keystore.Key{imported}, keystore.StateRetired, false); err != nil {
			t.Fatal(err)
		}
		k, _ := h.keySet().Key("*.corp.example.com")
		if got := len(k.Certificate) != 0; got != asked {
			t.Fatalf("certificates.imported %v: the imported key has a certificate: %v", asked, got)
		}
		if active, _ := h.keySet().Active(); len(active.Certificate) == 0 {
			t.Fatal("keyd's own key has no certificate")
		}
	}
}
