package main

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	vaultapi "github.com/hashicorp/vault/api"

	"github.com/keyd-dev/keyd/internal/config"
	"github.com/keyd-dev/keyd/internal/testvault"
)

// TestTransitCustody runs keyd on a real OpenBao with two key sets whose
// keys live in Transit: tokens verify with PyJWT through keyd's JWKS; the
// key set's Vault entry holds Transit key names, never a private key; a
// revoked key's Transit key is deleted at once; a rotation makes a new
// Transit key; with Vault frozen, signing answers 503 custody_unavailable,
// /readyz says degraded and keyd_custody_errors_total counts it, and all
// is well again when Vault answers.
func TestTransitCustody(t *testing.T) {
	python := pyjwt(t)
	srv := testvault.Start(t)
	vc := srv.RootClient(t)
	if err := vc.Sys().Mount("transit", &vaultapi.MountInput{Type: "transit"}); err != nil {
		t.Fatal(err)
	}
	cfg := writeVaultConfig(t, srv, `  - {name: es, algorithm: ES256, rotation: "@daily", token_ttl: 10m, jwks_max_age: 1m, custody: {type: vault_transit}}
  - {name: ps, algorithm: PS256, rotation: "@daily", token_ttl: 10m, jwks_max_age: 1m, custody: {type: vault_transit, key_prefix: "app-"}}
  - {name: hs, algorithm: HS256, rotation: "@daily", token_ttl: 10m, jwks_max_age: 1m, custody: {type: vault_transit, key_prefix: "mac-"}}
`)
	d := startDaemon(t, vaultEnv, "--config", cfg)
	defer d.stop()
	rec := &recorder{}
	transitKeys := func() []string {
		s, err := vc.Logical().List("transit/keys")
		if err != nil || s == nil {
			return nil
		}
		var out []string
		for _, k := range s.Data["keys"].([]any) {
			out = append(out, k.(string))
		}
		return out
	}
	if got := transitKeys(); len(got) != 6 {
		t.Fatalf("Transit keys after the start: %v (want two per key set)", got)
	}
	// HMAC in Transit: keyd signs and verifies by asking it.
	status, body, _ := rec.call(t, "POST", d.addr+"/v1/keysets/hs/sign", serviceToken, `{"claims":{"sub":"mac"}}`)
	hs := regexp.MustCompile(`"token":"([^"]+)"`).FindSubmatch(body)
	if status != 200 || hs == nil {
		t.Fatalf("sign hs: %d %s", status, body)
	}
	status, body, _ = rec.call(t, "POST", d.addr+"/v1/keysets/hs/verify", serviceToken, `{"token":"`+string(hs[1])+`"}`)
	if status != 200 || !strings.Contains(string(body), `"valid":true`) {
		t.Fatalf("verify hs: %d %s", status, body)
	}
	for keyset, alg := range map[string]string{"es": "ES256", "ps": "PS256"} {
		status, body, _ := rec.call(t, "POST", d.addr+"/v1/keysets/"+keyset+"/sign", serviceToken, `{"claims":{"sub":"held-by-transit"}}`)
		tok := regexp.MustCompile(`"token":"([^"]+)"`).FindSubmatch(body)
		if status != 200 || tok == nil {
			t.Fatalf("sign %s: %d %s", keyset, status, body)
		}
		cmd := exec.Command(python, "testdata/seed_app.py", "verify", d.addr+"/v1/keysets/"+keyset+"/jwks.json", alg)
		cmd.Stdin = strings.NewReader(string(tok[1]))
		out, err := cmd.CombinedOutput()
		if err != nil || strings.TrimSpace(string(out)) != "valid held-by-transit" {
			t.Fatalf("PyJWT with %s: %v %s", keyset, err, out)
		}
	}
	// The stored key set: Transit key names and public keys, no private key.
	kv, err := vc.KVv2("secret").Get(context.Background(), prefixOf(t, cfg)+"/es")
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := json.Marshal(kv.Data)
	var rec2 struct {
		Keys []struct {
			Material []byte `json:"material"`
			Custody  string `json:"custody"`
			Public   []byte `json:"public"`
		} `json:"keys"`
	}
	if err := json.Unmarshal(raw, &rec2); err != nil || len(rec2.Keys) == 0 {
		t.Fatalf("the stored record (%s): %v", raw, err)
	}
	for _, k := range rec2.Keys {
		if k.Custody != "vault_transit" || !strings.HasPrefix(string(k.Material), "keyd-es-") || len(k.Public) == 0 {
			t.Fatalf("stored key: custody %q, material %q", k.Custody, k.Material)
		}
		if _, err := x509.ParsePKCS8PrivateKey(k.Material); err == nil {
			t.Fatal("a private key is stored for a Transit key set")
		}
	}
	// Revoking the pending key deletes its Transit key at once (and makes
	// a new pending one there).
	keys := keysOf(t, rec, d, "es")
	var pending string
	for _, k := range keys {
		if k.State == "pending" {
			pending = k.KID
		}
	}
	before := transitKeys()
	if status, body, _ := rec.call(t, "POST", d.addr+"/v1/keysets/es/keys/"+pending+"/revoke", adminToken, ""); status != 200 {
		t.Fatalf("revoke: %d %s", status, body)
	}
	after := transitKeys()
	if len(after) != len(before) || strings.Join(after, ",") == strings.Join(before, ",") {
		t.Fatalf("Transit keys before the revocation %v, after %v: want one deleted and one made", before, after)
	}
	// A rotation makes one more Transit key.
	if status, body, _ := rec.call(t, "POST", d.addr+"/v1/keysets/ps/rotate", adminToken, `{"force":true}`); status != 200 {
		t.Fatalf("rotate: %d %s", status, body)
	}
	if got := transitKeys(); len(got) != len(after)+1 {
		t.Fatalf("Transit keys after a rotation: %v", got)
	}
	// Vault stops answering (frozen): 503 custody_unavailable, keyd stays
	// up, /readyz says degraded and which key set, the metric counts it.
	if err := srv.Freeze(); err != nil {
		t.Fatal(err)
	}
	status, body, _ = rec.call(t, "POST", d.addr+"/v1/keysets/es/sign", serviceToken, `{"claims":{"sub":"x"}}`)
	if status != 503 || !strings.Contains(string(body), "custody_unavailable") {
		_ = srv.Thaw()
		t.Fatalf("sign with Vault frozen: %d %s", status, body)
	}
	status, body, _ = rec.call(t, "GET", d.addr+"/readyz", "", "")
	if err := srv.Thaw(); err != nil {
		t.Fatal(err)
	}
	if status != 200 || !strings.Contains(string(body), `"status":"degraded"`) || !strings.Contains(string(body), `"custody_keyset":"es"`) || strings.Contains(string(body), "custody_detail") {
		t.Fatalf("readyz with Vault frozen: %d %s", status, body)
	}
	_, metrics, _ := rec.call(t, "GET", d.addr+"/metrics", "", "")
	if !regexp.MustCompile(`keyd_custody_errors_total\{keyset="es",op="sign"\} [1-9]`).Match(metrics) {
		t.Fatalf("custody metric:\n%s", grepLines(string(metrics), "custody"))
	}
	// Vault back: signing works again without a restart, and keyd is ready.
	if status, body, _ := rec.call(t, "POST", d.addr+"/v1/keysets/es/sign", serviceToken, `{"claims":{"sub":"x"}}`); status != 200 {
		t.Fatalf("sign with Vault back: %d %s", status, body)
	}
	// The custody is well at once; the store's own health (its poll
	// timed out during the freeze) at its next poll.
	for deadline := time.Now().Add(15 * time.Second); ; {
		status, body, _ := rec.call(t, "GET", d.addr+"/readyz", "", "")
		if strings.Contains(string(body), "custody") {
			t.Fatalf("readyz still blames the custody with Vault back: %d %s", status, body)
		}
		if status == 200 && strings.Contains(string(body), `"status":"ready"`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("readyz with Vault back: %d %s", status, body)
		}
		time.Sleep(100 * time.Millisecond) // the store's next poll
	}
	// Transit unmounted (its keys gone with it): 503 still, and keyd up.
	if err := vc.Sys().Unmount("transit"); err != nil {
		t.Fatal(err)
	}
	if status, body, _ := rec.call(t, "POST", d.addr+"/v1/keysets/es/sign", serviceToken, `{"claims":{"sub":"x"}}`); status != 503 || !strings.Contains(string(body), "custody_unavailable") {
		t.Fatalf("sign with Transit gone: %d %s", status, body)
	}
	if status, _, _ := rec.call(t, "GET", d.addr+"/healthz", "", ""); status != 200 {
		t.Fatalf("healthz after custody failures: %d", status)
	}
}

// prefixOf reads the Vault prefix writeVaultConfig chose, with keyd's own
// config parser.
func prefixOf(t *testing.T, cfgPath string) string {
	t.Helper()
	c, err := config.Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	return c.Storage.Vault.Prefix
}
