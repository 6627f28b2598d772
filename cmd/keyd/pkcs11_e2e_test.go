//go:build pkcs11

package main

import (
	"context"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	josejwt "github.com/go-jose/go-jose/v4/jwt"
	v1 "k8s.io/externaljwt/apis/v1"

	"github.com/keyd-dev/keyd/backends/file"
	"github.com/keyd-dev/keyd/internal/config"
	"github.com/keyd-dev/keyd/internal/testhsm"
)

func init() { buildTags = "pkcs11" }

// TestPKCS11Custody runs a keyd built with -tags pkcs11 on a SoftHSM
// token: an ES256 key set and the Kubernetes signer's RS256 key set keep
// their keys in the token. Tokens verify with PyJWT through the JWKS, the
// Kubernetes signer's with go-jose and FetchKeys' key; a rotation makes a
// key pair in the token and a revocation deletes one at once; with the
// token removed while keyd runs, signing answers 503 and /readyz says
// degraded; the bbolt file holds token references, never a private key.
func TestPKCS11Custody(t *testing.T) {
	python := pyjwt(t)
	tok := testhsm.New(t)
	dir := t.TempDir()
	sockDir, err := os.MkdirTemp("", "kube")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(sockDir)
	socket := filepath.Join(sockDir, "kube.sock")
	hsm := fmt.Sprintf("custody: {type: pkcs11, module: %q, token_label: %q}", testhsm.Module, tok.Label)
	cfg := fmt.Sprintf(`listen: 127.0.0.1:0
storage: {backend: file, file: {path: %q}}
keysets:
  - {name: es, algorithm: ES256, rotation: "@daily", token_ttl: 10m, jwks_max_age: 1m, %s}
  - {name: kube-sa, algorithm: RS256, rotation: "@daily", token_ttl: 1h, jwks_max_age: 1m, %s}
  - {name: hs, algorithm: HS256, rotation: "@daily", token_ttl: 10m, jwks_max_age: 1m, %s}
kubernetes: {socket: %q, keyset: kube-sa}
auth:
  tokens:
    - {name: ops, sha256: %q, scopes: [admin]}
    - {name: svc, sha256: %q, scopes: ["sign:*", "verify:*"]}
`, filepath.Join(dir, "keyd.db"), hsm, hsm, hsm, socket, config.TokenHash(adminToken), config.TokenHash(serviceToken))
	cfgPath := filepath.Join(dir, "keyd.yaml")
	writeFile(t, cfgPath, []byte(cfg))
	masterKey, _ := file.NewMasterKey()
	env := append([]string{"KEYD_MASTER_KEY=" + masterKey}, tok.Env()...)
	d := startDaemon(t, env, "--config", cfgPath)
	rec := &recorder{}
	pairs := func() int {
		return strings.Count(tok.Tool(t, "--list-objects", "--type", "privkey"), "Private Key Object")
	}
	if n := pairs(); n != 4 {
		t.Fatalf("%d private keys in the token after the start, want 4", n)
	}
	status, body, _ := rec.call(t, "POST", d.addr+"/v1/keysets/es/sign", serviceToken, `{"claims":{"sub":"in-the-hsm"}}`)
	m := regexp.MustCompile(`"token":"([^"]+)"`).FindSubmatch(body)
	if status != 200 || m == nil {
		t.Fatalf("sign: %d %s", status, body)
	}
	cmd := exec.Command(python, "testdata/seed_app.py", "verify", d.addr+"/v1/keysets/es/jwks.json", "ES256")
	cmd.Stdin = strings.NewReader(string(m[1]))
	if out, err := cmd.CombinedOutput(); err != nil || strings.TrimSpace(string(out)) != "valid in-the-hsm" {
		t.Fatalf("PyJWT: %v %s", err, out)
	}
	// HMAC in the token: keyd signs and verifies by asking it; the secret
	// reads back sensitive and never extractable.
	status, body, _ = rec.call(t, "POST", d.addr+"/v1/keysets/hs/sign", serviceToken, `{"claims":{"sub":"mac"}}`)
	hs := regexp.MustCompile(`"token":"([^"]+)"`).FindSubmatch(body)
	if status != 200 || hs == nil {
		t.Fatalf("sign hs: %d %s", status, body)
	}
	if status, body, _ := rec.call(t, "POST", d.addr+"/v1/keysets/hs/verify", serviceToken, `{"token":"`+string(hs[1])+`"}`); status != 200 || !strings.Contains(string(body), `"valid":true`) {
		t.Fatalf("verify hs: %d %s", status, body)
	}
	if out := tok.Tool(t, "--list-objects", "--type", "secrkey"); strings.Count(out, "never extractable") != 2 || !strings.Contains(out, "sensitive") {
		t.Fatalf("the HMAC secrets in the token:\n%s", out)
	}
	// The Kubernetes signer signs with the token's RSA key.
	kc := kubeSigner(t, socket)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	claims := base64.RawURLEncoding.EncodeToString([]byte(fmt.Sprintf(`{"sub":"system:serviceaccount:default:app","exp":%d}`, time.Now().Add(30*time.Minute).Unix())))
	signed, err := kc.Sign(ctx, &v1.SignJWTRequest{Claims: claims})
	if err != nil {
		t.Fatalf("kube Sign: %v", err)
	}
	keys, err := kc.FetchKeys(ctx, &v1.FetchKeysRequest{})
	if err != nil {
		t.Fatal(err)
	}
	jwt := signed.Header + "." + claims + "." + signed.Signature
	parsed, err := josejwt.ParseSigned(jwt, []jose.SignatureAlgorithm{jose.RS256})
	if err != nil {
		t.Fatal(err)
	}
	verified := false
	for _, k := range keys.Keys {
		if k.KeyId == parsed.Headers[0].KeyID {
			pub, _ := x509.ParsePKIXPublicKey(k.Key)
			var c josejwt.Claims
			verified = parsed.Claims(pub, &c) == nil && c.Subject == "system:serviceaccount:default:app"
		}
	}
	if !verified {
		t.Fatal("the Kubernetes signer's token does not verify with FetchKeys' key")
	}
	// A rotation makes a key pair in the token; revoking the pending key
	// deletes its pair at once and makes another.
	if status, body, _ := rec.call(t, "POST", d.addr+"/v1/keysets/es/rotate", adminToken, `{"force":true}`); status != 200 {
		t.Fatalf("rotate: %d %s", status, body)
	}
	if n := pairs(); n != 5 {
		t.Fatalf("%d private keys after a rotation, want 5", n)
	}
	var pending string
	for _, k := range keysOf(t, rec, d, "es") {
		if k.State == "pending" {
			pending = k.KID
		}
	}
	if status, body, _ := rec.call(t, "POST", d.addr+"/v1/keysets/es/keys/"+pending+"/revoke", adminToken, ""); status != 200 {
		t.Fatalf("revoke: %d %s", status, body)
	}
	if n := pairs(); n != 5 {
		t.Fatalf("%d private keys after revoking the pending key, want 5 (one deleted, one made)", n)
	}
	// The token removed while keyd runs (its folder deleted): signing
	// answers 503 custody_unavailable, /readyz says degraded, keyd stays up.
	if err := os.RemoveAll(filepath.Join(filepath.Dir(tok.Conf), "tokens")); err != nil {
		t.Fatal(err)
	}
	status, body, _ = rec.call(t, "POST", d.addr+"/v1/keysets/es/sign", serviceToken, `{"claims":{"sub":"x"}}`)
	if status != 503 || !strings.Contains(string(body), "custody_unavailable") {
		t.Fatalf("sign with the token removed: %d %s", status, body)
	}
	if status, body, _ := rec.call(t, "GET", d.addr+"/readyz", "", ""); status != 200 || !strings.Contains(string(body), `"custody_keyset":"es"`) {
		t.Fatalf("readyz with the token removed: %d %s", status, body)
	}
	if status, _, _ := rec.call(t, "GET", d.addr+"/healthz", "", ""); status != 200 {
		t.Fatalf("healthz with the token removed: %d", status)
	}
	d.stop()
	// The store: references into the token, no private key.
	raw, _ := base64.StdEncoding.DecodeString(masterKey)
	s, err := file.Open(file.Options{Path: filepath.Join(dir, "keyd.db"), MasterKey: raw})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, name := range []string{"es", "kube-sa", "hs"} {
		ks, err := s.Get(context.Background(), name)
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range ks.Keys {
			if k.Custody != "pkcs11" || len(k.Material) != 32 {
				t.Fatalf("%s key %s: custody %q, %d bytes of material", name, k.ID, k.Custody, len(k.Material))
			}
			if _, err := x509.ParsePKCS8PrivateKey(k.Material); err == nil {
				t.Fatal("a private key in the store of a PKCS#11 key set")
			}
		}
	}
}

// TestMasterKeyWrappedByPKCS11: bbolt's master key wrapped by an AES key
// in a SoftHSM token. keyd master-key new makes the AES key (sensitive,
// never extractable) and the wrapped file; keyd unwraps it at start, and
// a token signed before a restart verifies after it. Another token (the
// AES key not there) stops the start with a message naming the key.
func TestMasterKeyWrappedByPKCS11(t *testing.T) {
	tok := testhsm.New(t)
	dir := t.TempDir()
	wrapped := filepath.Join(dir, "master.key.wrapped")
	block := fmt.Sprintf(`  file:
    path: %q
    master_key_file: %q
    master_key: {wrapped_by: pkcs11, module: %q, token_label: %q}`, filepath.Join(dir, "keyd.db"), wrapped, testhsm.Module, tok.Label)
	cfg := writeWrappedConfig(t, dir, "keyd.yaml", block)
	env := append(tok.Env(), "KEYD_MASTER_KEY=")
	code, out := runKeyd(t, env, "", "master-key", "new", "--config", cfg, "--out", wrapped)
	if code != 0 || !strings.Contains(out, "made the wrapping key keyd-master (pkcs11)") {
		t.Fatalf("master-key new --config: exit %d\n%s", code, out)
	}
	if objs := tok.Tool(t, "--list-objects", "--type", "secrkey"); !strings.Contains(objs, "keyd-master") || !strings.Contains(objs, "never extractable") {
		t.Fatalf("the wrapping key in the token:\n%s", objs)
	}
	d := startDaemon(t, env, "--config", cfg)
	w := &tokenWorld{t: t, rec: &recorder{}}
	signed := w.sign(d, "alice")
	d.stop()
	d = startDaemon(t, env, "--config", cfg)
	w.verifies(d, signed, "after a restart with the wrapped key")
	d.stop()

	other := testhsm.New(t) // a fresh token: no keyd-master in it
	if code, out := runKeyd(t, append(other.Env(), "KEYD_MASTER_KEY="), "", "serve", "--config", cfg); code == 0 || !strings.Contains(out, `no secret key labelled "keyd-master"`) {
		t.Fatalf("a token without the wrapping key: exit %d\n%s", code, out)
	}
}
