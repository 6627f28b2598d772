package main

import (
	"context"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/externaljwt/apis/v1"

	"github.com/keyd-dev/keyd/backends/file"
)

// TestKubernetesSigner runs the real daemon as kube-apiserver's external
// signer: over its Unix socket, Metadata, FetchKeys and Sign answer, and
// the key set is in keyd's JWKS too.
func TestKubernetesSigner(t *testing.T) {
	dir := t.TempDir()
	sockDir, err := os.MkdirTemp("", "kube")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(sockDir)
	socket := filepath.Join(sockDir, "kube.sock")
	cfg := fmt.Sprintf(`listen: 127.0.0.1:0
storage: {backend: file, file: {path: %q}}
keysets:
  - {name: kube-sa, algorithm: RS256, rotation: "@daily", token_ttl: 1h, jwks_max_age: 1m}
kubernetes: {socket: %q, keyset: kube-sa}
`, filepath.Join(dir, "keyd.db"), socket)
	cfgPath := filepath.Join(dir, "keyd.yaml")
	writeFile(t, cfgPath, []byte(cfg))
	masterKey, _ := file.NewMasterKey()
	env := []string{"KEYD_MASTER_KEY=" + masterKey}
	d := startDaemon(t, env, "--config", cfgPath)

	c := kubeSigner(t, socket)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	meta, err := c.Metadata(ctx, &v1.MetadataRequest{})
	if err != nil || meta.MaxTokenExpirationSeconds != 3600 {
		t.Fatalf("Metadata = %v, %v", meta, err)
	}
	keys, err := c.FetchKeys(ctx, &v1.FetchKeysRequest{})
	if err != nil || len(keys.Keys) != 2 || keys.RefreshHintSeconds != 60 {
		t.Fatalf("FetchKeys = %v, %v", keys, err)
	}
	claims := base64.RawURLEncoding.EncodeToString([]byte(fmt.Sprintf(`{"sub":"system:serviceaccount:default:app","exp":%d}`, time.Now().Add(30*time.Minute).Unix())))
	signed, err := c.Sign(ctx, &v1.SignJWTRequest{Claims: claims})
	if err != nil || signed.Header == "" || signed.Signature == "" {
		t.Fatalf("Sign = %v, %v", signed, err)
	}
	rec := &recorder{}
	_, body, _ := rec.call(t, "GET", d.addr+"/v1/keysets/kube-sa/jwks.json", "", "")
	for _, k := range keys.Keys {
		if !strings.Contains(string(body), k.KeyId) {
			t.Fatalf("FetchKeys' kid %s is not in keyd's JWKS", k.KeyId)
		}
	}
	fi, err := os.Stat(socket)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode: %v %v", fi, err)
	}
	d.stop()
	if _, err := os.Stat(socket); !os.IsNotExist(err) {
		t.Errorf("the socket outlived the daemon: %v", err)
	}
	// An algorithm kube-apiserver does not take is refused at start, by name.
	writeFile(t, cfgPath, []byte(strings.Replace(cfg, "algorithm: RS256", "algorithm: EdDSA", 1)))
	code, out := runKeyd(t, env, "", "serve", "--config", cfgPath)
	if code == 0 || !strings.Contains(out, "keysets[0].algorithm") || !strings.Contains(out, "kube-apiserver") {
		t.Fatalf("EdDSA for kubernetes: exit %d: %s", code, out)
	}
}
