package daemon

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keyd-dev/keyd/certs"
	"github.com/keyd-dev/keyd/certs/certstest"
	"github.com/keyd-dev/keyd/custody/pkcs11"
	"github.com/keyd-dev/keyd/internal/config"
)

// TestKeySetFilesAreChecked: the files key sets name (a CA's certificate
// and key, a PKCS#11 PIN) are read by the daemon's build step, which a
// start, a reload and keyd config check share: every problem named by its
// field and reported at once; a good CA and a self-signing one reach the
// policies.
func TestKeySetFilesAreChecked(t *testing.T) {
	dir := t.TempDir()
	ca := certstest.NewCA(t, dir, "ca", time.Now())
	other := certstest.NewCA(t, dir, "other", time.Now())
	pin := filepath.Join(dir, "pin")
	if err := os.WriteFile(pin, []byte("1234"), 0o644); err != nil {
		t.Fatal(err)
	}
	src := `keysets:
  - {name: a, algorithm: ES256, certificates: {ca_cert_file: ` + ca.CertFile + `, ca_key_file: ` + other.KeyFile + `}}
  - {name: b, algorithm: ES256, certificates: {ca_cert_file: ` + filepath.Join(dir, "missing.crt") + `, ca_key_file: ` + ca.KeyFile + `}}
  - {name: c, algorithm: ES256, custody: {type: pkcs11, module: /lib/softhsm2.so, token_label: keyd, pin_file: ` + pin + `}}
`
	cfg, err := config.Parse(strings.NewReader(src), "t")
	if err != nil {
		t.Fatal(err)
	}
	err = CheckConfig(cfg, func(string) string { return "" })
	wants := []string{"keysets[0].certificates: ", "does not hold the private key of the certificate",
		"keysets[1].certificates: open " + filepath.Join(dir, "missing.crt")}
	if pkcs11.Available {
		wants = append(wants, "keysets[2].custody.pin_file: ")
	} else {
		wants = append(wants, "keysets[2].custody.type: "+pkcs11.ErrNotBuilt.Error())
	}
	for _, want := range wants {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("config check: %v\nwant %q", err, want)
		}
	}
	if _, err := policies(cfg, nil); err == nil || !strings.Contains(err.Error(), "keysets[1].certificates") {
		t.Errorf("a start or reload builds the policies of a missing CA file: %v", err)
	}

	cfg, err = config.Parse(strings.NewReader(`keysets:
  - {name: a, algorithm: ES256, certificates: {ca_cert_file: `+ca.CertFile+`, ca_key_file: `+ca.KeyFile+`}}
  - {name: s, algorithm: ES256, certificates: {self_signed: true}}
  - {name: n, algorithm: ES256}
`), "t")
	if err != nil {
		t.Fatal(err)
	}
	ps, err := policies(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if ps[0].Certificates == nil || ps[2].Certificates != nil {
		t.Errorf("authorities: %#v, %#v", ps[0].Certificates, ps[2].Certificates)
	}
	if a, ok := ps[1].Certificates.(*certs.Authority); !ok || !a.SelfSigned() || a.Validity() != config.DefaultCertificateValidity {
		t.Errorf("self-signed policy: %#v", ps[1].Certificates)
	}
}
