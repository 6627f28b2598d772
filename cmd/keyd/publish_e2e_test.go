package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/coreos/go-oidc/v3/oidc"

	"github.com/keyd-dev/keyd/backends/file"
	"github.com/keyd-dev/keyd/internal/config"
)

// TestPublishedIssuerVerifies: keyd publishes the discovery document and
// JWKS to a folder that an HTTPS server serves (as nginx would); go-oidc,
// reading only from there, verifies keyd's tokens. With the folder gone,
// the rotation that would make an unpublished key sign waits (and says
// so); with the folder back, it happens, and tokens of the new key verify
// from the target too.
func TestPublishedIssuerVerifies(t *testing.T) {
	dir := t.TempDir()
	site := filepath.Join(dir, "site")
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		http.ServeFile(w, r, filepath.Join(site, filepath.Clean(r.URL.Path)))
	}))
	defer srv.Close()
	mk, _ := file.NewMasterKey()
	env := []string{"KEYD_MASTER_KEY=" + mk}
	cfg := filepath.Join(dir, "keyd.yaml")
	writeFile(t, cfg, fmt.Appendf(nil, `listen: 127.0.0.1:0
storage: {backend: file, file: {path: %q}}
keysets:
  - {name: es, algorithm: ES256, rotation: "@every 3s", token_ttl: 1m, jwks_max_age: 1s, issuer: %q}
publish:
  - {name: site, to: "file://%s", keysets: [es], issuer: %q, required: true, files: [jwks, discovery, revocations]}
auth:
  tokens:
    - {name: ops, sha256: %q, scopes: [admin]}
    - {name: svc, sha256: %q, scopes: ["sign:*", "verify:*"]}
`, filepath.Join(dir, "keyd.db"), srv.URL, site, srv.URL, config.TokenHash(adminToken), config.TokenHash(serviceToken)))
	d := startDaemon(t, env, "--config", cfg)
	w := &tokenWorld{t: t, rec: &recorder{}}
	waitFor(t, "the discovery document on the target", func() bool {
		_, err := os.Stat(filepath.Join(site, ".well-known", "openid-configuration"))
		return err == nil
	})
	waitFor(t, "the revocation list on the target", func() bool {
		raw, err := os.ReadFile(filepath.Join(site, "revocations", "es.jwt"))
		return err == nil && strings.Count(string(raw), ".") == 2
	})
	if attrs, _ := os.ReadFile(filepath.Join(site, "revocations", "es.jwt.attrs")); !strings.Contains(string(attrs), "application/jwt") {
		t.Fatalf("the revocation list's content type: %s", attrs)
	}
	ctx := oidc.ClientContext(context.Background(), srv.Client())
	provider, err := oidc.NewProvider(ctx, srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	verifier := provider.Verifier(&oidc.Config{SkipClientIDCheck: true})
	if _, err := verifier.Verify(ctx, w.sign(d, "alice")); err != nil {
		t.Fatalf("go-oidc from the target: %v", err)
	}

	// The target goes away: the next rotation activates the pending key
	// the target held, and the one after waits for the new pending key.
	active := func() (string, string) { return rotationState(t, w.rec, d, "es") }
	if err := os.RemoveAll(site); err != nil {
		t.Fatal(err)
	}
	writeFile(t, site, []byte("not a folder: the target is down"))
	first, _ := active()
	var held string
	waitFor(t, "a rotation to the key the target held", func() bool { held, _ = active(); return held != first })
	var why string
	waitFor(t, "the next rotation to wait for the target", func() bool { _, why = active(); return strings.Contains(why, "site") })
	if now, _ := active(); now != held {
		t.Fatalf("a key the target never held became active: %s", now)
	}
	if err := os.Remove(site); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the rotation once the target is back", func() bool { now, _ := active(); return now != held })
	if _, err := verifier.Verify(ctx, w.sign(d, "bob")); err != nil {
		t.Fatalf("go-oidc from the target after the rotation: %v", err)
	}
	d.stop()
}

// rotationState is key set name's active kid at d, and what its rotation
// waits for ("" when nothing).
func rotationState(t *testing.T, rec *recorder, d *daemonProc, name string) (active, waits string) {
	t.Helper()
	status, body, _ := rec.call(t, "GET", d.addr+"/v1/keysets/"+name, adminToken, "")
	var ks struct {
		Keys []struct {
			KID   string `json:"kid"`
			State string `json:"state"`
		} `json:"keys"`
		Waits string `json:"rotation_waits_for"`
	}
	if status != 200 || json.Unmarshal(body, &ks) != nil {
		t.Fatalf("key set %s: %d %s", name, status, body)
	}
	for _, k := range ks.Keys {
		if k.State == "active" {
			active = k.KID
		}
	}
	return active, ks.Waits
}
