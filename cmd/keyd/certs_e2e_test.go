package main

import (
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/keyd-dev/keyd/backends/file"
	"github.com/keyd-dev/keyd/internal/config"
)

// TestCertificateChains runs the daemon with a CA made by openssl (an RS256
// key set) and self-signed certificates (an EdDSA key set): the JWKS
// carries x5c and x5t#S256 that go-jose accepts (it checks both against
// the key), openssl verify accepts every chain, KID.crt serves the chain,
// and PyJWT verifies keyd's tokens with the certificate's public key, as
// verifiers that take a certificate do.
func TestCertificateChains(t *testing.T) {
	python := pyjwt(t)
	dir := t.TempDir()
	caCert, caKey := filepath.Join(dir, "ca.crt"), filepath.Join(dir, "ca.key")
	if out, err := exec.Command("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
		"-keyout", caKey, "-out", caCert, "-days", "30", "-subj", "/CN=keyd e2e CA",
		"-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign").CombinedOutput(); err != nil {
		t.Fatalf("openssl req: %v\n%s", err, out)
	}
	if err := os.Chmod(caKey, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf(`listen: 127.0.0.1:0
storage: {backend: file, file: {path: %q}}
keysets:
  - {name: rs, algorithm: RS256, rotation: "@daily", token_ttl: 10m, jwks_max_age: 1m,
     certificates: {ca_cert_file: %q, ca_key_file: %q, validity: 720h}}
  - {name: ed, algorithm: EdDSA, rotation: "@daily", token_ttl: 10m, jwks_max_age: 1m,
     certificates: {self_signed: true}}
  - {name: hs, algorithm: HS256, rotation: "@daily", token_ttl: 10m, jwks_max_age: 1m}
auth:
  tokens:
    - {name: ops, sha256: %q, scopes: [admin]}
    - {name: svc, sha256: %q, scopes: ["sign:*"]}
`, filepath.Join(dir, "keyd.db"), caCert, caKey, config.TokenHash(adminToken), config.TokenHash(serviceToken))
	cfgPath := filepath.Join(dir, "keyd.yaml")
	writeFile(t, cfgPath, []byte(cfg))
	masterKey, _ := file.NewMasterKey()
	d := startDaemon(t, []string{"KEYD_MASTER_KEY=" + masterKey}, "--config", cfgPath)
	defer d.stop()
	rec := &recorder{}

	status, body, _ := rec.call(t, "GET", d.addr+"/.well-known/jwks.json", "", "")
	var set jose.JSONWebKeySet
	if status != 200 {
		t.Fatalf("JWKS: %d %s", status, body)
	}
	if err := json.Unmarshal(body, &set); err != nil { // go-jose checks x5c and x5t#S256 against the key
		t.Fatalf("go-jose refuses the JWKS: %v", err)
	}
	if len(set.Keys) != 4 {
		t.Fatalf("%d keys published", len(set.Keys))
	}
	writePEM := func(name string, ders ...[]byte) string {
		var b strings.Builder
		for _, der := range ders {
			b.Write(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
		}
		p := filepath.Join(dir, name)
		writeFile(t, p, []byte(b.String()))
		return p
	}
	opensslVerify := func(caFile, certFile string) {
		t.Helper()
		out, err := exec.Command("openssl", "verify", "-CAfile", caFile, certFile).CombinedOutput()
		if err != nil || strings.TrimSpace(string(out)) != certFile+": OK" {
			t.Fatalf("openssl verify -CAfile %s %s: %v\n%s", filepath.Base(caFile), filepath.Base(certFile), err, out)
		}
	}
	for _, k := range set.Keys {
		if len(k.Certificates) == 0 || k.CertificateThumbprintSHA256 == nil {
			t.Fatalf("key %s (%s) has no x5c / x5t#S256", k.KeyID, k.Algorithm)
		}
		leaf := writePEM(k.KeyID+".leaf.pem", k.Certificates[0].Raw)
		switch k.Algorithm {
		case "RS256":
			if len(k.Certificates) != 2 {
				t.Fatalf("RS256 key %s: chain of %d, want leaf and CA", k.KeyID, len(k.Certificates))
			}
			opensslVerify(caCert, leaf)
			// KID.crt: the same chain, as PEM, cached like the JWKS.
			status, crt, hdr := rec.call(t, "GET", d.addr+"/v1/keysets/rs/keys/"+k.KeyID+".crt", "", "")
			if status != 200 || strings.Count(string(crt), "BEGIN CERTIFICATE") != 2 || hdr.Get("Cache-Control") != "public, max-age=60" {
				t.Fatalf("KID.crt: %d %v\n%s", status, hdr, crt)
			}
			opensslVerify(caCert, writePEM(k.KeyID+".crt", k.Certificates[0].Raw, k.Certificates[1].Raw))
		case "EdDSA":
			if len(k.Certificates) != 1 {
				t.Fatalf("EdDSA key %s: chain of %d, want the self-signed certificate", k.KeyID, len(k.Certificates))
			}
			opensslVerify(leaf, leaf)
		default:
			t.Fatalf("unexpected key %s %s", k.KeyID, k.Algorithm)
		}
	}

	// PyJWT verifies keyd's tokens with the public key of the certificate
	// the JWKS gives for the token's kid.
	for keyset, alg := range map[string]string{"rs": "RS256", "ed": "EdDSA"} {
		status, body, _ := rec.call(t, "POST", d.addr+"/v1/keysets/"+keyset+"/sign", serviceToken, `{"claims":{"sub":"cert-user"}}`)
		var out struct{ Token, KID string }
		if status != 200 || json.Unmarshal(body, &out) != nil {
			t.Fatalf("sign: %d %s", status, body)
		}
		keys := set.Key(out.KID)
		if len(keys) != 1 {
			t.Fatalf("no published key %s", out.KID)
		}
		cmd := exec.Command(python, "-c", `import base64, sys, jwt
from cryptography import x509
cert = x509.load_der_x509_certificate(base64.b64decode(sys.argv[2]))
print(jwt.decode(sys.argv[1], cert.public_key(), algorithms=[sys.argv[3]])["sub"])`,
			out.Token, base64.StdEncoding.EncodeToString(keys[0].Certificates[0].Raw), alg)
		got, err := cmd.CombinedOutput()
		if err != nil || strings.TrimSpace(string(got)) != "cert-user" {
			t.Fatalf("PyJWT with %s's certificate: %v\n%s", keyset, err, got)
		}
	}

	// Operators see when each certificate expires.
	status, body, _ = rec.call(t, "GET", d.addr+"/v1/keysets/rs", adminToken, "")
	var view struct {
		Keys []struct {
			KID     string    `json:"kid"`
			Expires time.Time `json:"certificate_expires_at"`
		} `json:"keys"`
	}
	if status != 200 || json.Unmarshal(body, &view) != nil || len(view.Keys) != 2 {
		t.Fatalf("key set view: %d %s", status, body)
	}
	for _, k := range view.Keys {
		if d := time.Until(k.Expires); d < 719*time.Hour || d > 721*time.Hour {
			t.Errorf("key %s: certificate expires in %v, want 720h", k.KID, d)
		}
	}
	if code, out := runKeyd(t, []string{"KEYD_ADDR=" + d.addr, "KEYD_TOKEN=" + adminToken}, "", "keysets", "rs"); code != 0 || !strings.Contains(out, "certificates:") || !strings.Contains(out, view.Keys[0].KID+" until ") {
		t.Errorf("keyd keysets rs: %d\n%s", code, out)
	}
	if status, body, _ := rec.call(t, "GET", d.addr+"/v1/keysets/hs/keys/x.crt", "", ""); status != 404 || !strings.Contains(string(body), "certificate_not_found") {
		t.Errorf("an HMAC key set's certificate: %d %s", status, body)
	}
}
