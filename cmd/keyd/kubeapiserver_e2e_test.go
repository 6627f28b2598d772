package main

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/go-jose/go-jose/v4"
	josejwt "github.com/go-jose/go-jose/v4/jwt"

	"github.com/keyd-dev/keyd/backends/file"
	"github.com/keyd-dev/keyd/internal/config"
	"github.com/keyd-dev/keyd/internal/testblob"
	"github.com/keyd-dev/keyd/internal/testkube"
)

// TestKubeAPIServerMovesToKeyd moves a real cluster (kube-apiserver and
// etcd) from its sa.key to keyd as docs/kubernetes.md's "Moving a cluster to keyd"
// says: a token the old key signed is imported verify-only (kid computed
// with docs/kubernetes.md's openssl line), the API server restarts with
// --service-account-signing-endpoint on keyd's socket, and then
// TokenRequest gives a token keyd signed, TokenReview accepts it and the
// old token, and refuses a token of a key nobody imported; go-oidc
// verifies both from the copy keyd publishes to an S3 bucket alone.
func TestKubeAPIServerMovesToKeyd(t *testing.T) {
	dir := t.TempDir()
	saKey, saPub := filepath.Join(dir, "sa.key"), filepath.Join(dir, "sa.pub")
	for _, args := range [][]string{
		{"genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", saKey},
		{"pkey", "-in", saKey, "-pubout", "-out", saPub},
	} {
		if out, err := exec.Command("openssl", args...).CombinedOutput(); err != nil {
			t.Fatalf("openssl %v: %v\n%s", args, err, out)
		}
	}
	// The cluster as it runs today: its own sa.key.
	kube := testkube.Start(t, testkube.Options{KeyFile: saKey})
	if status, body := kube.Do(t, "POST", "/api/v1/namespaces/default/serviceaccounts", map[string]any{"metadata": map[string]any{"name": "app"}}); status != 201 {
		t.Fatalf("create service account: %d %s", status, body)
	}
	tokenRequest := func() string {
		t.Helper()
		status, body := kube.Do(t, "POST", "/api/v1/namespaces/default/serviceaccounts/app/token",
			map[string]any{"spec": map[string]any{"audiences": []string{testkube.Issuer}, "expirationSeconds": 3600}})
		var tr struct {
			Status struct{ Token string } `json:"status"`
		}
		if status != 201 || json.Unmarshal(body, &tr) != nil || tr.Status.Token == "" {
			t.Fatalf("TokenRequest: %d %s", status, body)
		}
		return tr.Status.Token
	}
	review := func(token string) (bool, string) {
		t.Helper()
		status, body := kube.Do(t, "POST", "/apis/authentication.k8s.io/v1/tokenreviews",
			map[string]any{"spec": map[string]any{"token": token, "audiences": []string{testkube.Issuer}}})
		var tr struct {
			Status struct {
				Authenticated bool
				User          struct{ Username string }
				Error         string
			} `json:"status"`
		}
		if status != 201 || json.Unmarshal(body, &tr) != nil {
			t.Fatalf("TokenReview: %d %s", status, body)
		}
		return tr.Status.Authenticated && tr.Status.User.Username == "system:serviceaccount:default:app", tr.Status.Error
	}
	oldToken := tokenRequest()
	if ok, why := review(oldToken); !ok {
		t.Fatalf("the old key's token before the move: %s", why)
	}

	// keyd, with the old public key imported as docs/kubernetes.md says.
	sockDir, err := os.MkdirTemp("", "kube")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(sockDir)
	socket := filepath.Join(sockDir, "kube.sock")
	bucket := testblob.S3(t) // the self-hosted issuer's bucket
	cfgPath := filepath.Join(dir, "keyd.yaml")
	writeFile(t, cfgPath, []byte(fmt.Sprintf(`listen: 127.0.0.1:0
storage: {backend: file, file: {path: %q}}
keysets:
  - {name: kube-sa, algorithm: RS256, rotation: "@daily", token_ttl: 1h, jwks_max_age: 1m}
kubernetes: {socket: %q, keyset: kube-sa}
publish:
  - {name: bucket, to: %q, keysets: [kube-sa], issuer: %q, jwks_path: openid/v1/jwks, required: true}
auth:
  tokens:
    - {name: ops, sha256: %q, scopes: [admin]}
`, filepath.Join(dir, "keyd.db"), socket, bucket.URL, testkube.Issuer, config.TokenHash(adminToken))))
	masterKey, _ := file.NewMasterKey()
	d := startDaemon(t, append([]string{"KEYD_MASTER_KEY=" + masterKey}, bucket.Env...), "--config", cfgPath)
	defer d.stop()
	kidOut, err := exec.Command("sh", "-c", `openssl pkey -pubin -in "$1" -outform DER | openssl dgst -sha256 -binary | basenc --base64url | tr -d =`, "sh", saPub).Output()
	if err != nil {
		t.Fatalf("docs/kubernetes.md's kid line: %v", err)
	}
	kid := strings.TrimSpace(string(kidOut))
	if header := decodeHeader(t, oldToken); header["kid"] != kid {
		t.Fatalf("docs/kubernetes.md's kid %q is not the one kube-apiserver wrote (%v)", kid, header["kid"])
	}
	cli := []string{"KEYD_ADDR=" + d.addr, "KEYD_TOKEN=" + adminToken}
	if code, out := runKeyd(t, cli, "", "import-key", "kube-sa", "--file", saPub, "--kid", kid, "--verify-until", "48h"); code != 0 {
		t.Fatalf("import sa.pub: %d %s", code, out)
	}

	// The switch: no key file, keyd's socket.
	kube.Restart(t, testkube.Options{SigningEndpoint: socket})
	if ok, why := review(oldToken); !ok {
		t.Fatalf("the old key's token after the move: %s", why)
	}
	newToken := tokenRequest()
	rec := &recorder{}
	_, body, _ := rec.call(t, "GET", d.addr+"/v1/keysets/kube-sa", adminToken, "")
	var ks struct {
		Keys []struct{ KID, State string } `json:"keys"`
	}
	_ = json.Unmarshal(body, &ks)
	active := ""
	for _, k := range ks.Keys {
		if k.State == "active" {
			active = k.KID
		}
	}
	if h := decodeHeader(t, newToken); h["kid"] != active || active == "" {
		t.Fatalf("TokenRequest's token has kid %v, keyd's active key is %q", h["kid"], active)
	}
	if ok, why := review(newToken); !ok {
		t.Fatalf("keyd's token: %s", why)
	}
	// keyd's JWKS verifies it too (go-jose).
	_, jwksBody, _ := rec.call(t, "GET", d.addr+"/v1/keysets/kube-sa/jwks.json", "", "")
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(jwksBody, &set); err != nil {
		t.Fatal(err)
	}
	parsed, err := josejwt.ParseSigned(newToken, []jose.SignatureAlgorithm{jose.RS256})
	if err != nil {
		t.Fatal(err)
	}
	var claims josejwt.Claims
	if err := parsed.Claims(set.Key(active)[0].Key, &claims); err != nil || claims.Subject != "system:serviceaccount:default:app" || claims.Issuer != testkube.Issuer {
		t.Fatalf("go-jose with keyd's JWKS: %v %+v", err, claims)
	}
	// The cluster's own discovery serves keyd's keys and the imported one.
	if status, body := kube.Do(t, "GET", "/openid/v1/jwks", nil); status != 200 || !strings.Contains(string(body), active) || !strings.Contains(string(body), kid) {
		t.Errorf("/openid/v1/jwks: %d %s", status, body)
	}
	// The published copy in the bucket (S3, SeaweedFS), read anonymously as
	// cloud IAM reads a self-hosted issuer: go-oidc verifies the cluster's
	// tokens, keyd's and the imported key's, from it alone.
	ctx := context.Background()
	verifier := oidc.NewVerifier(testkube.Issuer, oidc.NewRemoteKeySet(ctx, bucket.Public+"/openid/v1/jwks"), &oidc.Config{ClientID: testkube.Issuer})
	waitFor(t, "the imported key in the bucket", func() bool {
		raw, status, _ := bucket.Get(t, "openid/v1/jwks")
		return status == 200 && strings.Contains(string(raw), kid)
	})
	for name, tok := range map[string]string{"keyd's": newToken, "the old key's": oldToken} {
		if _, err := verifier.Verify(ctx, tok); err != nil {
			t.Errorf("%s token from the bucket: %v", name, err)
		}
	}
	if disc, _, _ := bucket.Get(t, ".well-known/openid-configuration"); !strings.Contains(string(disc), `"jwks_uri":"`+testkube.Issuer+`/openid/v1/jwks"`) {
		t.Errorf("the discovery document in the bucket: %s", disc)
	}
	// A token like the old one, signed by a key nobody imported: refused.
	stranger, _ := rsa.GenerateKey(rand.Reader, 2048)
	sig, _ := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: stranger}, (&jose.SignerOptions{}).WithHeader("kid", kid))
	forged, err := josejwt.Signed(sig).Claims(oldClaims(t, oldToken)).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	if ok, _ := review(forged); ok {
		t.Fatal("a token of an unknown key was accepted")
	}
}

func decodeHeader(t *testing.T, token string) map[string]any {
	t.Helper()
	raw, err := base64.RawURLEncoding.DecodeString(strings.Split(token, ".")[0])
	var h map[string]any
	if err != nil || json.Unmarshal(raw, &h) != nil {
		t.Fatalf("token header: %v", err)
	}
	return h
}

func oldClaims(t *testing.T, token string) map[string]any {
	t.Helper()
	raw, err := base64.RawURLEncoding.DecodeString(strings.Split(token, ".")[1])
	var c map[string]any
	if err != nil || json.Unmarshal(raw, &c) != nil {
		t.Fatalf("token claims: %v", err)
	}
	c["iat"], c["nbf"] = time.Now().Unix(), time.Now().Unix()
	return c
}
