package certs_test

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keyd-dev/keyd/certs"
	"github.com/keyd-dev/keyd/certs/certstest"
)

var now = time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)

func TestIssueByCA(t *testing.T) {
	ca := certstest.NewCA(t, t.TempDir(), "ca", now)
	a, err := certs.Load(ca.CertFile, ca.KeyFile, 30*24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, err := a.Issue("api", "kid-1", key.Public(), nil, now) // a public-only key is fine for a CA
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.CheckSignatureFrom(ca.Cert); err != nil {
		t.Fatalf("not signed by the CA: %v", err)
	}
	if !key.PublicKey.Equal(c.PublicKey) || c.Subject.CommonName != "keyd:api:kid-1" || c.IsCA || c.KeyUsage != x509.KeyUsageDigitalSignature {
		t.Fatalf("certificate: cn %q ca %v usage %v", c.Subject.CommonName, c.IsCA, c.KeyUsage)
	}
	if !c.NotAfter.Equal(now.Add(30*24*time.Hour)) || !c.NotBefore.Equal(now.Add(-certs.Backdate)) {
		t.Fatalf("validity %v - %v", c.NotBefore, c.NotAfter)
	}
	// Renewed two thirds of the way through its life.
	at, ok := a.RenewAt(der)
	life := c.NotAfter.Sub(c.NotBefore)
	if !ok || !at.Equal(c.NotBefore.Add(life*2/3)) {
		t.Fatalf("RenewAt = %v %v", at, ok)
	}
	if got := a.Chain(der); len(got) != 2 || string(got[1]) != string(ca.Cert.Raw) {
		t.Fatalf("chain of %d", len(got))
	}
	// Another CA, a shorter validity, self-signing, or garbage: replace now.
	o := certstest.NewCA(t, t.TempDir(), "other", now)
	other, err := certs.Load(o.CertFile, o.KeyFile, 30*24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	shorter, _ := certs.Load(ca.CertFile, ca.KeyFile, 7*24*time.Hour)
	for name, a := range map[string]*certs.Authority{"other CA": other, "shorter validity": shorter, "self-signed": certs.SelfSigned(30 * 24 * time.Hour)} {
		if _, ok := a.RenewAt(der); ok {
			t.Errorf("%s: kept a certificate it must replace", name)
		}
	}
	if _, ok := a.RenewAt([]byte("not DER")); ok {
		t.Error("garbage kept")
	}
	if _, ok := a.RenewAt(nil); ok {
		t.Error("no certificate kept")
	}
}

func TestSelfSigned(t *testing.T) {
	a := certs.SelfSigned(24 * time.Hour)
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	der, err := a.Issue("ed", "kid-ed", pub, priv, now)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	if err := c.CheckSignature(c.SignatureAlgorithm, c.RawTBSCertificate, c.Signature); err != nil {
		t.Fatalf("not self-signed: %v", err)
	}
	if _, ok := a.RenewAt(der); !ok {
		t.Fatal("its own certificate must be kept")
	}
	if len(a.Chain(der)) != 1 {
		t.Fatal("a self-signed chain is the certificate alone")
	}
	if _, err := a.Issue("ed", "public-only", pub, nil, now); !errors.Is(err, certs.ErrNoPrivateKey) {
		t.Fatalf("self-signed without a private key: %v", err)
	}
}

func TestLoadErrorsNameTheFile(t *testing.T) {
	dir := t.TempDir()
	ca := certstest.NewCA(t, dir, "ca", now)
	write := func(name, content string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	keyPEM, _ := os.ReadFile(ca.KeyFile)
	// A leaf certificate (not a CA).
	leafKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	a, _ := certs.Load(ca.CertFile, ca.KeyFile, time.Hour)
	leafDER, _ := a.Issue("x", "leaf", leafKey.Public(), nil, now)
	leaf := write("leaf.crt", string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leafDER})), 0o644)
	other := certstest.NewCA(t, t.TempDir(), "other", now)
	for _, c := range []struct {
		name, cert, key, want string
	}{
		{"missing cert", filepath.Join(dir, "nope.crt"), ca.KeyFile, "nope.crt"},
		{"no PEM", write("empty.crt", "hello", 0o644), ca.KeyFile, "holds no PEM certificate"},
		{"not a CA", leaf, ca.KeyFile, "is not a CA"},
		{"readable key", ca.CertFile, write("open.key", string(keyPEM), 0o644), "readable by others; run chmod 600"},
		{"encrypted key", ca.CertFile, write("enc.key", "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n", 0o600), "decrypt it first"},
		{"another CA's key", ca.CertFile, other.KeyFile, "does not hold the private key of the certificate"},
	} {
		_, err := certs.Load(c.cert, c.key, time.Hour)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v (want %q)", c.name, err, c.want)
		}
		if err != nil && strings.Contains(err.Error(), "PRIVATE KEY-----") {
			t.Errorf("%s: the error shows the file's content", c.name)
		}
	}
}

// keyd's certificates are for JWT keys, never TLS: a CA-issued leaf for an
// imported key whose kid another issuer chose (*.corp.example.com) used
// to pass openssl verify as sslserver and sslclient (no extended key usage
// means any, and the CN was the kid). Now openssl refuses both purposes,
// the chain verifies for no purpose in particular, and no name matches.
func TestCertificatesAreNotForTLS(t *testing.T) {
	openssl, err := exec.LookPath("openssl")
	if err != nil {
		t.Skip("no openssl")
	}
	dir := t.TempDir()
	ca := certstest.NewCA(t, dir, "ca", time.Now())
	a, err := certs.Load(ca.CertFile, ca.KeyFile, 30*24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, err := a.Issue("api", "*.corp.example.com", key.Public(), nil, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	leaf := filepath.Join(dir, "leaf.pem")
	if err := os.WriteFile(leaf, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	verify := func(args ...string) error {
		out, err := exec.Command(openssl, append(append([]string{"verify", "-CAfile", ca.CertFile}, args...), leaf)...).CombinedOutput()
		if err != nil {
			return errors.New(string(out))
		}
		return nil
	}
	if err := verify(); err != nil {
		t.Fatalf("the chain does not verify: %v", err)
	}
	for _, purpose := range []string{"sslserver", "sslclient"} {
		if err := verify("-purpose", purpose); err == nil {
			t.Errorf("openssl accepts keyd's certificate for %s", purpose)
		}
	}
	if err := verify("-verify_hostname", "www.corp.example.com"); err == nil {
		t.Error("openssl matches keyd's certificate to a host name")
	}
}
