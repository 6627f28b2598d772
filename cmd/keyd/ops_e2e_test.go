package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/keyd-dev/keyd/backends/file"
	"github.com/keyd-dev/keyd/internal/config"
)

// testCA issues certificates for the TLS tests.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newCA(t *testing.T, name string) *testCA {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// issue makes a leaf certificate; serial tells renewals apart.
func (ca *testCA) issue(t *testing.T, serial int64, server bool, uri string) (certPEM, keyPEM []byte, pair tls.Certificate) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "keyd-test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature,
	}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.ParseIP("127.0.0.1")}
	} else {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
		u, _ := url.Parse(uri)
		tmpl.URIs = []*url.URL{u}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalPKCS8PrivateKey(key)
	certPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	pair, err = tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return certPEM, keyPEM, pair
}

// writeKeydConfig writes a config of one bbolt store at dir/keyd.db, its
// storage extra (token_state, indented under storage), the key set es
// (ES256, ten-minute tokens) with keysetExtra, and the admin and service
// tokens; it returns its path.
func writeKeydConfig(t *testing.T, dir, storageExtra, keysetExtra string) string {
	t.Helper()
	path := filepath.Join(dir, "keyd.yaml")
	writeFile(t, path, []byte(fmt.Sprintf(`listen: 127.0.0.1:0
storage:
  backend: file
  file: {path: %q}
%s
keysets:
  - {name: es, algorithm: ES256, rotation: "@daily", token_ttl: 10m, jwks_max_age: 1m%s}
auth:
  tokens:
    - {name: ops, sha256: %q, scopes: [admin]}
    - {name: svc, sha256: %q, scopes: ["sign:*", "verify:*"]}
`, filepath.Join(dir, "keyd.db"), storageExtra, keysetExtra, config.TokenHash(adminToken), config.TokenHash(serviceToken))))
	return path
}

func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

func httpsClient(ca *testCA, certs ...tls.Certificate) *http.Client {
	pool := x509.NewCertPool()
	pool.AddCert(ca.cert)
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: certs},
	}}
}

func do(t *testing.T, c *http.Client, method, url, token, body string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(out)
}

// TestTLSClientsReloadAndDiscovery serves HTTPS with client certificates,
// then reloads a renewed certificate, a new token and a new key set with
// SIGHUP, and refuses a broken config while keeping the old one in force.
func TestTLSClientsReloadAndDiscovery(t *testing.T) {
	dir := t.TempDir()
	ca := newCA(t, "keyd test CA")
	certPEM, keyPEM, _ := ca.issue(t, 100, true, "")
	writeFile(t, filepath.Join(dir, "server.crt"), certPEM)
	writeFile(t, filepath.Join(dir, "server.key"), keyPEM)
	writeFile(t, filepath.Join(dir, "clients-ca.pem"), ca.pem)
	_, _, billing := ca.issue(t, 200, false, "spiffe://test.example/billing")
	_, _, stranger := ca.issue(t, 201, false, "spiffe://test.example/stranger")
	other := newCA(t, "another CA")
	_, _, forged := other.issue(t, 300, false, "spiffe://test.example/billing")

	cfgPath := filepath.Join(dir, "keyd.yaml")
	lateToken := "e2e-late-token"
	cfgText := func(extraKeySet, extraToken, algorithm string) string {
		return fmt.Sprintf(`listen: 127.0.0.1:0
issuer_url: https://keys.example.com
storage: {backend: file, file: {path: %q}}
tls: {cert_file: %q, key_file: %q, client_ca_file: %q}
keysets:
  - {name: es256, algorithm: %s, rotation: "@daily", token_ttl: 10m, jwks_max_age: 1m}
  - {name: hs256, algorithm: HS256, rotation: "@daily", token_ttl: 10m, jwks_max_age: 1m}
%sauth:
  tokens:
    - {name: ops, sha256: %q, scopes: [admin]}
%s  clients:
    - {name: billing, subject: "spiffe://test.example/billing", scopes: ["sign:es256"]}
`, filepath.Join(dir, "keyd.db"), filepath.Join(dir, "server.crt"), filepath.Join(dir, "server.key"), filepath.Join(dir, "clients-ca.pem"),
			algorithm, extraKeySet, config.TokenHash(adminToken), extraToken)
	}
	writeFile(t, cfgPath, []byte(cfgText("", "", "ES256")))
	masterKey, _ := file.NewMasterKey()
	d := startDaemon(t, []string{"KEYD_MASTER_KEY=" + masterKey}, "--config", cfgPath)
	base := "https://" + strings.TrimPrefix(d.addr, "http://")

	// A client that does not trust keyd's CA cannot talk to it.
	if _, err := http.Get(base + "/healthz"); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("a client without the CA: %v", err)
	}
	anon := httpsClient(ca)
	resp, err := anon.Get(base + "/.well-known/jwks.json")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.TLS.Version < tls.VersionTLS12 {
		t.Fatalf("JWKS over TLS: %d, version %x", resp.StatusCode, resp.TLS.Version)
	}
	if code, body := do(t, anon, "POST", base+"/v1/keysets/es256/sign", "", `{}`); code != 401 {
		t.Fatalf("no credentials: %d %s", code, body)
	}

	// The client certificate is the credential, mapped to its scopes.
	withCert := httpsClient(ca, billing)
	if code, body := do(t, withCert, "POST", base+"/v1/keysets/es256/sign", "", `{"claims":{"sub":"x"}}`); code != 200 || !strings.Contains(body, `"token"`) {
		t.Fatalf("sign with the billing certificate: %d %s", code, body)
	}
	if code, body := do(t, withCert, "POST", base+"/v1/keysets/hs256/sign", "", `{}`); code != 403 || !strings.Contains(body, "billing") {
		t.Fatalf("billing outside its scopes: %d %s", code, body)
	}
	if code, body := do(t, httpsClient(ca, stranger), "POST", base+"/v1/keysets/es256/sign", "", `{}`); code != 401 || !strings.Contains(body, "no configured client") {
		t.Fatalf("a certificate naming no client: %d %s", code, body)
	}
	// A client certificate of another CA: Go's client would not even send
	// it (the server names its CA), so force it.
	forcing := httpsClient(ca)
	forcing.Transport.(*http.Transport).TLSClientConfig.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &forged, nil }
	if resp, err := forcing.Get(base + "/healthz"); err == nil {
		resp.Body.Close()
		t.Fatal("a client certificate from another CA was accepted")
	}

	// OpenID Connect discovery.
	code, body := do(t, anon, "GET", base+"/.well-known/openid-configuration", "", "")
	var disc struct {
		Issuer  string   `json:"issuer"`
		JWKSURI string   `json:"jwks_uri"`
		Algs    []string `json:"id_token_signing_alg_values_supported"`
	}
	if code != 200 || json.Unmarshal([]byte(body), &disc) != nil || disc.Issuer != "https://keys.example.com" ||
		disc.JWKSURI != "https://keys.example.com/.well-known/jwks.json" || strings.Join(disc.Algs, ",") != "ES256" {
		t.Fatalf("discovery: %d %s", code, body)
	}

	// keyd status, over HTTPS with the CA given to the CLI.
	cli := []string{"--addr", base, "--token", adminToken, "--ca-file", filepath.Join(dir, "clients-ca.pem")}
	code, out := runKeyd(t, nil, "", append([]string{"status"}, cli...)...)
	if code != 0 || !strings.Contains(out, "ready, store ok") || !strings.Contains(out, "es256") || !strings.Contains(out, "1/1/0/0") {
		t.Fatalf("keyd status: exit %d:\n%s", code, out)
	}
	if code, out := runKeyd(t, nil, "", "status", "--addr", base, "--token", adminToken); code == 0 || !strings.Contains(out, "certificate") {
		t.Fatalf("keyd status without the CA: exit %d: %s", code, out)
	}

	// Renew the certificate, add a token and a key set, raise the log
	// level; SIGHUP applies all of it.
	certPEM, keyPEM, _ = ca.issue(t, 101, true, "")
	writeFile(t, filepath.Join(dir, "server.crt"), certPEM)
	writeFile(t, filepath.Join(dir, "server.key"), keyPEM)
	lateKeySet := "  - {name: late, algorithm: EdDSA, rotation: \"@daily\", token_ttl: 5m, jwks_max_age: 1m}\n"
	lateEntry := fmt.Sprintf("    - {name: late, sha256: %q, scopes: [\"sign:late\"]}\n", config.TokenHash(lateToken))
	writeFile(t, cfgPath, []byte(cfgText(lateKeySet, lateEntry, "ES256")+"log_level: debug\n"))
	if err := d.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the reload", func() bool { return strings.Contains(d.log(), `"msg":"config reloaded"`) })
	resp, err = httpsClient(ca).Get(base + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if serial := resp.TLS.PeerCertificates[0].SerialNumber.Int64(); serial != 101 {
		t.Fatalf("after SIGHUP the server presents certificate %d, want the renewed 101", serial)
	}
	if code, body := do(t, anon, "POST", base+"/v1/keysets/late/sign", lateToken, `{}`); code != 200 {
		t.Fatalf("new token on the new key set: %d %s", code, body)
	}
	if _, body := do(t, anon, "GET", base+"/v1/keysets/late/jwks.json", "", ""); !strings.Contains(body, `"OKP"`) {
		t.Fatalf("the new key set is not published: %s", body)
	}
	do(t, anon, "GET", base+"/healthz", "", "")
	waitFor(t, "debug logging", func() bool { return strings.Contains(d.log(), `"level":"DEBUG"`) })

	if code, out := runKeyd(t, nil, "", append([]string{"reload"}, cli...)...); code != 0 || !strings.Contains(out, "reloaded") {
		t.Fatalf("keyd reload: exit %d: %s", code, out)
	}

	// Broken configs are refused whole, by SIGHUP and by the API.
	writeFile(t, cfgPath, []byte(cfgText(lateKeySet, lateEntry, "ES256")+"keysets_typo: []\n"))
	_ = d.cmd.Process.Signal(syscall.SIGHUP)
	waitFor(t, "the refusal", func() bool { return strings.Contains(d.log(), "config reload refused") })
	code, body = do(t, anon, "POST", base+"/v1/reload", adminToken, ``)
	if code != 422 || !strings.Contains(body, "reload_refused") || !strings.Contains(body, "keysets_typo") {
		t.Fatalf("POST /v1/reload of a broken config: %d %s", code, body)
	}
	writeFile(t, cfgPath, []byte(strings.Replace(cfgText(lateKeySet, lateEntry, "ES384"), "https://keys.example.com", "https://other.example.com", 1)))
	if code, body := do(t, anon, "POST", base+"/v1/reload", adminToken, ``); code != 422 || !strings.Contains(body, "algorithm cannot change") {
		t.Fatalf("reload changing an algorithm: %d %s", code, body)
	}
	if code, body := do(t, anon, "GET", base+"/.well-known/openid-configuration", "", ``); code != 200 || !strings.Contains(body, `"issuer":"https://keys.example.com"`) {
		t.Fatalf("a refused reload changed the issuer: %d %s", code, body)
	}
	writeFile(t, cfgPath, []byte(strings.Replace(cfgText(lateKeySet, lateEntry, "ES256"), `rotation: "@daily", token_ttl: 10m, jwks_max_age: 1m`, `rotation: "@every 1m", token_ttl: 10m, jwks_max_age: 2m`, 1)))
	if code, body := do(t, anon, "POST", base+"/v1/reload", adminToken, ``); code != 422 || !strings.Contains(body, "keysets[0].rotation") {
		t.Fatalf("reload with a schedule faster than jwks_max_age: %d %s", code, body)
	}
	// The old config is still in force, all of it, and the daemon alive.
	if code, body := do(t, anon, "POST", base+"/v1/keysets/late/sign", lateToken, `{}`); code != 200 {
		t.Fatalf("after refused reloads: %d %s", code, body)
	}
	if code, body := do(t, withCert, "POST", base+"/v1/keysets/es256/sign", "", `{}`); code != 200 {
		t.Fatalf("after refused reloads, the client certificate: %d %s", code, body)
	}
	if code, body := do(t, anon, "GET", base+"/v1/keysets/es256", adminToken, ``); code != 200 || !strings.Contains(body, `"jwks_max_age":"1m0s"`) {
		t.Fatalf("after refused reloads, es256 settings: %d %s", code, body)
	}
	d.stop()
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
