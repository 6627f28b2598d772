package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	josejwt "github.com/go-jose/go-jose/v4/jwt"

	"github.com/keyd-dev/keyd/backends/file"
	"github.com/keyd-dev/keyd/internal/config"
	"github.com/keyd-dev/keyd/internal/testblob"
)

// strictVerifier reads a JWKS from a URL the way cloud IAM does: it keeps
// what it fetched for the response's max-age and never fetches again for
// an unknown kid, so a key that signs before every cached copy holds it
// fails here (go-oidc would hide that by fetching again).
type strictVerifier struct {
	url     string
	keys    jose.JSONWebKeySet
	until   time.Time
	fetches int
}

func (v *strictVerifier) verify(tok string) error {
	if time.Now().After(v.until) {
		resp, err := http.Get(v.url)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		maxAge, err := strconv.Atoi(strings.TrimPrefix(resp.Header.Get("Cache-Control"), "public, max-age="))
		if err != nil || resp.StatusCode != 200 {
			return fmt.Errorf("JWKS: %s, Cache-Control %q", resp.Status, resp.Header.Get("Cache-Control"))
		}
		v.keys = jose.JSONWebKeySet{}
		if err := jsonDecode(resp.Body, &v.keys); err != nil {
			return err
		}
		v.until, v.fetches = time.Now().Add(time.Duration(maxAge)*time.Second), v.fetches+1
	}
	parsed, err := josejwt.ParseSigned(tok, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		return err
	}
	kid := parsed.Headers[0].KeyID
	keys := v.keys.Key(kid)
	if len(keys) == 0 {
		return fmt.Errorf("kid %s is not in the JWKS fetched %v before its cache time ends", kid, time.Until(v.until))
	}
	var claims josejwt.Claims
	return parsed.Claims(keys[0].Key, &claims)
}

// TestRotationsNeverOutrunPublishedCopies: keyd rotates every 2 s and
// publishes to S3 (SeaweedFS) as a required target with a 1 s cache;
// twice the store freezes for 4 s (without the gate, a key the bucket
// never held would sign then). A verifier reading only the bucket,
// caching for max-age and never fetching early, verifies a fresh token
// every 50 ms across 20 rotations: not one fails.
func TestRotationsNeverOutrunPublishedCopies(t *testing.T) {
	if testing.Short() {
		t.Skip("20 rotations take about a minute")
	}
	srv := testblob.S3(t)
	defer func() { _ = srv.Thaw() }()
	dir := t.TempDir()
	mk, _ := file.NewMasterKey()
	cfg := filepath.Join(dir, "keyd.yaml")
	writeFile(t, cfg, fmt.Appendf(nil, `listen: 127.0.0.1:0
storage: {backend: file, file: {path: %q}}
keysets:
  - {name: es, algorithm: ES256, rotation: "@every 2s", token_ttl: 1m, jwks_max_age: 1s}
publish:
  - {name: bucket, to: %q, keysets: [es], required: true}
auth:
  tokens:
    - {name: ops, sha256: %q, scopes: [admin]}
    - {name: svc, sha256: %q, scopes: ["sign:*", "verify:*"]}
`, filepath.Join(dir, "keyd.db"), srv.URL, config.TokenHash(adminToken), config.TokenHash(serviceToken)))
	d := startDaemon(t, append([]string{"KEYD_MASTER_KEY=" + mk}, srv.Env...), "--config", cfg)
	defer d.stop()
	w := &tokenWorld{t: t, rec: &recorder{}}
	waitFor(t, "the JWKS in the bucket", func() bool { _, status, _ := srv.Get(t, ".well-known/jwks.json"); return status == 200 })
	v := &strictVerifier{url: srv.Public + "/.well-known/jwks.json"}
	kids := map[string]bool{}
	frozen := map[int]bool{}
	deadline := time.Now().Add(3 * time.Minute)
	for signed := 0; len(kids) < 21; signed++ {
		if n := len(kids); (n == 5 || n == 12) && !frozen[n] {
			frozen[n] = true
			if err := srv.Freeze(); err != nil {
				t.Fatal(err)
			}
			thaw := time.AfterFunc(4*time.Second, func() { _ = srv.Thaw() })
			defer thaw.Stop()
		}
		tok := w.sign(d, fmt.Sprint("user-", signed))
		if err := v.verify(tok); err != nil {
			t.Fatalf("token %d (after %d rotations): %v", signed, len(kids)-1, err)
		}
		parsed, _ := josejwt.ParseSigned(tok, []jose.SignatureAlgorithm{jose.ES256})
		kids[parsed.Headers[0].KeyID] = true
		if time.Now().After(deadline) {
			t.Fatalf("only %d rotations in 3 minutes", len(kids)-1)
		}
		time.Sleep(50 * time.Millisecond) // the pace of a client, not a wait for an outcome
	}
	t.Logf("20 rotations, %d JWKS fetches, no failed verification", v.fetches)
}

func jsonDecode(r io.Reader, v any) error { return json.NewDecoder(r).Decode(v) }
