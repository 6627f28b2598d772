package main

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/coreos/go-oidc/v3/oidc"

	"github.com/keyd-dev/keyd/backends/file"
	"github.com/keyd-dev/keyd/internal/bucket"
	"github.com/keyd-dev/keyd/internal/config"
	"github.com/keyd-dev/keyd/internal/testblob"
)

// TestPublishToObjectStores: keyd publishes the discovery document and
// the JWKS to S3 (SeaweedFS), Google Cloud Storage (fake-gcs-server) and
// Azure Blob Storage (Azurite), real servers it reaches with their clouds'
// credential mechanisms. Read anonymously from each store alone, as AWS
// STS or Google's federation would: the content type and cache control
// are set, go-oidc's discovery and remote key set verify keyd's tokens,
// and PyJWT's PyJWKClient does too. On S3, a frozen store holds the
// rotation (the status says why) and keyd goes on signing; thawed, the
// rotation happens and the new key verifies from the bucket.
func TestPublishToObjectStores(t *testing.T) {
	python := pyjwt(t)
	for _, start := range []func(testing.TB) *testblob.Server{testblob.S3, testblob.GCS, testblob.Azure} {
		srv := start(t)
		t.Run(srv.Scheme, func(t *testing.T) {
			dir := t.TempDir()
			mk, _ := file.NewMasterKey()
			idFile, recipient := ageIdentity(t, dir)
			backups := strings.Replace(srv.URL, "/site", "/backups", 1)
			cfg := filepath.Join(dir, "keyd.yaml")
			writeFile(t, cfg, fmt.Appendf(nil, `listen: 127.0.0.1:0
storage: {backend: file, file: {path: %q}}
keysets:
  - {name: es, algorithm: ES256, rotation: "@every 3s", token_ttl: 1m, jwks_max_age: 1s, issuer: %q}
publish:
  - {name: %s, to: %q, keysets: [es], issuer: %q, required: true, files: [jwks, discovery]}
backup: {schedule: "@every 1s", to: %q, keep: 2, recipients: [%q]}
auth:
  tokens:
    - {name: ops, sha256: %q, scopes: [admin]}
    - {name: svc, sha256: %q, scopes: ["sign:*", "verify:*"]}
`, filepath.Join(dir, "keyd.db"), srv.Public, srv.Scheme, srv.URL, srv.Public, backups, recipient, config.TokenHash(adminToken), config.TokenHash(serviceToken)))
			env := append([]string{"KEYD_MASTER_KEY=" + mk}, srv.Env...)
			if code, out := runKeyd(t, env, "", "config", "check", cfg); code != 0 || !strings.Contains(out, "publish "+srv.Scheme+": "+srv.Scheme+"://") || !strings.Contains(out, "backups: @every 1s to "+srv.Scheme+"://") {
				t.Fatalf("config check: exit %d\n%s", code, out)
			}
			d := startDaemon(t, env, "--config", cfg)
			defer d.stop()
			w := &tokenWorld{t: t, rec: &recorder{}}
			waitFor(t, "the discovery document in the store", func() bool {
				_, status, _ := srv.Get(t, ".well-known/openid-configuration")
				return status == 200
			})
			_, _, h := srv.Get(t, ".well-known/jwks.json")
			if h.Get("Content-Type") != "application/json" || h.Get("Cache-Control") != "public, max-age=1" {
				t.Fatalf("the JWKS is served as %q, %q", h.Get("Content-Type"), h.Get("Cache-Control"))
			}
			ctx := context.Background()
			provider, err := oidc.NewProvider(ctx, srv.Public)
			if err != nil {
				t.Fatal(err)
			}
			verifier := provider.Verifier(&oidc.Config{SkipClientIDCheck: true})
			tok := w.sign(d, "alice")
			if _, err := verifier.Verify(ctx, tok); err != nil {
				t.Fatalf("go-oidc from %s: %v", srv.Scheme, err)
			}
			out, err := exec.Command(python, "-c", `import jwt, sys
c = jwt.PyJWKClient(sys.argv[1])
t = sys.argv[2]
print(jwt.decode(t, c.get_signing_key_from_jwt(t).key, algorithms=["ES256"])["sub"])`, srv.Public+"/.well-known/jwks.json", tok).CombinedOutput()
			if err != nil || strings.TrimSpace(string(out)) != "alice" {
				t.Fatalf("PyJWKClient from %s: %v\n%s", srv.Scheme, err, out)
			}
			scheduledBackupInBucket(t, srv, backups, idFile)
			if srv.Scheme == "s3" {
				frozenStoreHoldsRotation(t, srv, d, w, verifier)
			}
		})
	}
}

// frozenStoreHoldsRotation freezes the store: the rotation that would make
// a key the store does not hold sign waits (the key set says for what),
// keyd goes on signing; thawed, the rotation happens and its key verifies
// from the bucket.
func frozenStoreHoldsRotation(t *testing.T, srv *testblob.Server, d *daemonProc, w *tokenWorld, verifier *oidc.IDTokenVerifier) {
	t.Helper()
	state := func() (string, string) { return rotationState(t, w.rec, d, "es") }
	if err := srv.Freeze(); err != nil {
		t.Fatal(err)
	}
	thawed := false
	defer func() {
		if !thawed {
			_ = srv.Thaw()
		}
	}()
	var held, why string
	waitFor(t, "a rotation waiting for the frozen store", func() bool { held, why = state(); return strings.Contains(why, "s3") })
	t.Logf("frozen: %s waits: %s", held, why)
	if now, _ := state(); now != held {
		t.Fatalf("a key the frozen store never held became active: %s", now)
	}
	_ = w.sign(d, "during-the-freeze") // signing goes on
	if err := srv.Thaw(); err != nil {
		t.Fatal(err)
	}
	thawed = true
	waitFor(t, "the rotation once the store is back", func() bool { now, _ := state(); return now != held })
	if _, err := verifier.Verify(context.Background(), w.sign(d, "bob")); err != nil {
		t.Fatalf("go-oidc from the bucket after the rotation: %v", err)
	}
}

// scheduledBackupInBucket waits for keyd's scheduled backups in the bucket
// at url, then checks the newest with keyd backup inspect and the
// identity: whole, and it decrypts.
func scheduledBackupInBucket(t *testing.T, srv *testblob.Server, url, idFile string) {
	t.Helper()
	srv.Setenv(t)
	ctx := context.Background()
	bk, err := bucket.Open(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer bk.Close()
	var names []string
	waitFor(t, "two scheduled backups in the bucket", func() bool {
		names = names[:0]
		it := bk.List(nil)
		for {
			obj, err := it.Next(ctx)
			if err != nil {
				break
			}
			names = append(names, obj.Key)
		}
		return len(names) >= 2
	})
	raw, err := bk.ReadAll(ctx, names[len(names)-1])
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "newest.backup")
	writeFile(t, path, raw)
	if code, out := runKeyd(t, nil, "", "backup", "inspect", "--identity", idFile, path); code != 0 || !strings.Contains(out, "checked: it decrypts") {
		t.Fatalf("the backup keyd put in the %s bucket: exit %d\n%s", srv.Scheme, code, out)
	}
}
