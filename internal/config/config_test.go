package config_test

import (
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/keyd-dev/keyd/internal/config"
)

var placeholder = regexp.MustCompile(`sha256: "REPLACE[^"]*"`)

// loadExample loads a shipped example config as its reader would: as
// shipped it must not start (every token is a placeholder, each named with
// how to make it); with each placeholder replaced by a `keyd token` hash
// it loads.
func loadExample(t *testing.T, path string) *config.Config {
	t.Helper()
	src, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	n := len(placeholder.FindAll(src, -1))
	if n == 0 {
		t.Fatalf("%s has no placeholder token: an example must not ship a working one", path)
	}
	_, err = config.Load(path)
	for i := range n {
		if w := fmt.Sprintf("auth.tokens[%d].sha256: is a placeholder: run `keyd token --name", i); err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("%s as shipped: error does not say %q: %v", path, w, err)
		}
	}
	filled := placeholder.ReplaceAllFunc(src, func([]byte) []byte {
		return []byte(fmt.Sprintf("sha256: %q", config.TokenHash(rand.Text())))
	})
	p := filepath.Join(t.TempDir(), filepath.Base(path))
	if err := os.WriteFile(p, filled, 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := config.Load(p)
	if err != nil {
		t.Fatalf("%s with its placeholders replaced: %v", path, err)
	}
	return c
}

// No shipped config accepts a token anyone could guess: no hash in them
// is that of a dictionary word, and one put there is refused.
func TestShippedConfigsAcceptNoGuessableToken(t *testing.T) {
	files, err := filepath.Glob("../../configs/*.yaml")
	if err != nil || len(files) < 3 {
		t.Fatalf("configs: %v %v", files, err)
	}
	hashes := regexp.MustCompile(`[0-9a-fA-F]{64}`)
	guesses := []string{"test", "foo", "bar", "baz", "4", "secret", "Password123", "admin", "changeme", "31337"}
	for _, f := range files {
		src, _ := os.ReadFile(f)
		for _, h := range hashes.FindAll(src, -1) {
			for _, g := range guesses {
				if strings.EqualFold(string(h), config.TokenHash(g)) {
					t.Errorf("%s holds the SHA-256 of %q", f, g)
				}
			}
		}
	}
	for _, g := range guesses {
		cfg := fmt.Sprintf("keysets: [{name: a, algorithm: ES256}]\nauth: {tokens: [{name: x, sha256: %q, scopes: [admin]}]}\n", config.TokenHash(g))
		if _, err := config.Parse(strings.NewReader(cfg), "t"); err == nil || !strings.Contains(err.Error(), "auth.tokens[0].sha256: is the hash of a guessable token") {
			t.Errorf("token %q accepted: %v", g, err)
		}
	}
	cfg := fmt.Sprintf("keysets: [{name: a, algorithm: ES256}]\nauth: {tokens: [{name: x, sha256: %q, scopes: [admin]}]}\n", config.TokenHash(rand.Text()))
	if _, err := config.Parse(strings.NewReader(cfg), "t"); err != nil {
		t.Errorf("a random token refused: %v", err)
	}
}

func TestExampleConfigLoads(t *testing.T) {
	c := loadExample(t, "../../configs/keyd.yaml")
	p := c.Policies()
	if len(p) != 1 || p[0].Name != "default" || p[0].TokenTTL != 15*time.Minute || p[0].JWKSMaxAge != 5*time.Minute {
		t.Fatalf("policies = %+v", p)
	}
}

func TestDefaults(t *testing.T) {
	c, err := config.Parse(strings.NewReader("keysets: [{name: a, algorithm: RS256}]\n"), "t")
	if err != nil {
		t.Fatal(err)
	}
	ks := c.KeySets[0]
	if c.Listen != config.DefaultListen || c.Storage.File.Path != config.DefaultPath || ks.RSABits != 2048 ||
		ks.Rotation != "@daily" || ks.TokenTTL != 15*time.Minute || *ks.Leeway != time.Minute {
		t.Fatalf("defaults not applied: %+v", c)
	}
	if err := config.Default().Validate(); err != nil {
		t.Fatalf("embedded default does not validate: %v", err)
	}
}

func TestUnknownFieldIsNamed(t *testing.T) {
	_, err := config.Parse(strings.NewReader("keysets: [{name: a, algorithm: ES256, rotaton: '@daily'}]\n"), "t")
	if err == nil || !strings.Contains(err.Error(), "rotaton") {
		t.Fatalf("unknown field error = %v", err)
	}
}

func TestEveryProblemReportedWithItsField(t *testing.T) {
	src := `
listen: "nope"
storage: {backend: s3}
keysets:
  - {name: "Bad Name", algorithm: none, rsa_bits: 1024, rotation: "not cron", token_ttl: -1s}
  - {name: fast, algorithm: ES256, rotation: "@every 1m", jwks_max_age: 5m}
  - {name: fast, algorithm: HS256}
auth:
  tokens:
    - {name: x, sha256: "abc", scopes: ["sign:ghost", "root"]}
    - {name: x, sha256: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", scopes: []}
`
	_, err := config.Parse(strings.NewReader(src), "t")
	if err == nil {
		t.Fatal("bad config accepted")
	}
	want := []string{
		"listen:", "storage.backend:", "keysets[0].name:", "keysets[0].algorithm:", "keysets[0].rsa_bits:",
		"keysets[0].rotation:", "keysets[0].token_ttl:", "keysets[1].rotation:", "jwks_max_age 5m0s",
		"keysets[2].name:", "auth.tokens[0].sha256:", "auth.tokens[0].scopes[0]:", "ghost",
		"auth.tokens[0].scopes[1]:", "auth.tokens[1].name:", "auth.tokens[1].scopes:",
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error does not mention %q:\n%v", w, err)
		}
	}
	var fe *config.FieldError
	if !errors.As(err, &fe) {
		t.Fatalf("errors are not *FieldError: %T", err)
	}
}

func TestRotationGapRule(t *testing.T) {
	ok := "keysets: [{name: a, algorithm: ES256, rotation: '*/10 * * * *', jwks_max_age: 10m}]\n"
	if _, err := config.Parse(strings.NewReader(ok), "t"); err != nil {
		t.Fatalf("10-minute schedule with 10m max age refused: %v", err)
	}
	// Fires at :00 and :05, then waits 55 minutes: the shortest gap counts.
	bad := "keysets: [{name: a, algorithm: ES256, rotation: '0,5 * * * *', jwks_max_age: 10m}]\n"
	if _, err := config.Parse(strings.NewReader(bad), "t"); err == nil || !strings.Contains(err.Error(), "keysets[0].rotation") {
		t.Fatalf("uneven schedule with a 5m gap accepted: %v", err)
	}
}

func TestProductionExampleLoads(t *testing.T) {
	c := loadExample(t, "../../configs/production.yaml")
	if len(c.KeySets) != 3 || c.KeySets[1].RSABits != 3072 || c.Auth.Tokens[3].Scopes[0] != "admin" {
		t.Fatalf("production example: %+v", c)
	}
}

func TestVaultExampleLoads(t *testing.T) {
	c := loadExample(t, "../../configs/vault.yaml")
	v := c.Storage.Vault
	if v.Auth.Method != "approle" || v.PollInterval != 5*time.Second || c.Policies()[0].PublishDelay != 6*time.Second {
		t.Fatalf("vault example: %+v", v)
	}
}

func TestVaultRules(t *testing.T) {
	src := `
storage: {backend: vault, vault: {auth: {method: approle}, poll_interval: 30s}}
keysets: [{name: a, algorithm: ES256, rotation: "@every 5m", jwks_max_age: 5m}]
`
	_, err := config.Parse(strings.NewReader(src), "t")
	for _, w := range []string{"storage.vault.auth.approle.role_id", "storage.vault.auth.approle.secret_id_file", "keysets[0].rotation", "poll_interval 30s"} {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("error does not mention %q: %v", w, err)
		}
	}
}

func TestZeroLeewayIsKept(t *testing.T) {
	c, err := config.Parse(strings.NewReader("keysets: [{name: a, algorithm: ES256, leeway: 0s}]\n"), "t")
	if err != nil {
		t.Fatal(err)
	}
	if l := c.Policies()[0].Leeway; l != 0 {
		t.Fatalf("leeway: 0s became %v", l)
	}
}

func TestKubernetesRules(t *testing.T) {
	for _, tc := range []struct{ keysets, kube, want string }{
		{"{name: sa, algorithm: EdDSA}", "{socket: /run/keyd/kube.sock, keyset: sa}", "keysets[0].algorithm"},
		{"{name: sa, algorithm: ES256, token_ttl: 5m}", "{socket: /run/keyd/kube.sock, keyset: sa}", "keysets[0].token_ttl"},
		{"{name: sa, algorithm: ES256}", "{socket: kube.sock, keyset: sa}", "kubernetes.socket"},
		{"{name: sa, algorithm: ES256}", "{socket: /run/keyd/kube.sock, keyset: other}", "kubernetes.keyset"},
		{"{name: sa, algorithm: RS256, token_ttl: 1h}", "{socket: /run/keyd/kube.sock, keyset: sa}", ""},
	} {
		_, err := config.Parse(strings.NewReader("keysets: ["+tc.keysets+"]\nkubernetes: "+tc.kube+"\n"), "test")
		if tc.want == "" && err != nil {
			t.Errorf("%s: %v", tc.keysets, err)
		}
		if tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%s / %s: %v, want an error naming %s", tc.keysets, tc.kube, err, tc.want)
		}
	}
}

// Problems are named by their YAML path, all at once: unknown fields with
// the field meant, durations without a unit, rsa_bits on a key set that is
// not RSA, a cron word without its @.
func TestErrorsNameTheYAMLPath(t *testing.T) {
	src := `
listen: 127.0.0.1:8080
keysets:
  - {name: a, algoritm: ES256}
  - {name: b, algorithm: ES256, token_ttl: 15, rsa_bits: 2048}
  - {name: c, algorithm: ES256, rotation: daily}
storage: {file: {pathh: x}}
`
	_, err := config.Parse(strings.NewReader(src), "t")
	for _, w := range []string{
		"keysets[0].algoritm: unknown field (did you mean algorithm?)",
		"keysets[1].token_ttl: 15 has no unit: use one, e.g. 15m",
		"keysets[1].rsa_bits: only RSA key sets",
		"storage.file.pathh: unknown field (did you mean path?)",
	} {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("error does not say %q:\n%v", w, err)
		}
	}
	_, err = config.Parse(strings.NewReader("keysets: [{name: c, algorithm: ES256, rotation: daily}]\n"), "t")
	if err == nil || !strings.Contains(err.Error(), "did you mean @daily?") {
		t.Errorf("cron word: %v", err)
	}
}

// A misindented line is named even when the YAML parser reports another.
func TestIndentationErrorNamesTheLine(t *testing.T) {
	_, err := config.Parse(strings.NewReader("keysets:\n  - name: a\n    algorithm: ES256\n   rotation: \"@daily\"\n"), "t")
	if err == nil || !strings.Contains(err.Error(), "line 4 is indented 3 spaces") {
		t.Fatalf("misindented line: %v", err)
	}
}

func TestExamplesConfigLoads(t *testing.T) {
	c := loadExample(t, "../../configs/examples.yaml")
	if p := c.Policies()[0]; p.Name != "app" || p.Issuer != "https://keyd.example" || p.RefreshTTL != 24*time.Hour {
		t.Fatalf("examples config: %+v", p)
	}
}

// keysets[].certificates: each problem named by its field (the CA's files
// are the daemon's to read: TestKeySetFilesAreChecked).
func TestCertificatesRules(t *testing.T) {
	ks := func(extra string) string {
		return "keysets: [{name: a, algorithm: ES256, rotation: \"@daily\", token_ttl: 10m, jwks_max_age: 1h, certificates: " + extra + "}]\n"
	}
	for _, c := range []struct{ certs, want string }{
		{`{self_signed: true, ca_cert_file: x}`, "keysets[0].certificates.self_signed: excludes ca_cert_file"},
		{`{ca_cert_file: /etc/ca.crt}`, "keysets[0].certificates: ca_cert_file and ca_key_file go together"},
		{`{validity: 48h}`, "keysets[0].certificates.validity: needs self_signed"},
		{`{self_signed: true, validity: 2h}`, "keysets[0].certificates.validity: must be at least 1h and 3 x jwks_max_age (3h0m0s)"},
	} {
		_, err := config.Parse(strings.NewReader(ks(c.certs)), "t")
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v\nwant %q", c.certs, err, c.want)
		}
	}
	_, err := config.Parse(strings.NewReader("keysets: [{name: h, algorithm: HS256, certificates: {self_signed: true}}]\n"), "t")
	if err == nil || !strings.Contains(err.Error(), "keysets[0].certificates: HS256 key sets publish no public keys") {
		t.Errorf("HMAC: %v", err)
	}
	if _, err := config.Parse(strings.NewReader(ks(`{ca_cert_file: /nowhere/ca.crt, ca_key_file: /nowhere/ca.key}`)), "t"); err != nil {
		t.Fatalf("parsing reads no file: %v", err)
	}
}

// keysets[].custody: vault_transit needs the Vault backend and an
// asymmetric algorithm; pkcs11 needs a module (whether this keyd has
// PKCS#11 is the daemon's check); every problem is named by its field.
func TestCustodyRules(t *testing.T) {
	vault := "storage: {backend: vault, vault: {address: http://127.0.0.1:8200, auth: {method: token}}}\n"
	for _, c := range []struct{ src, want string }{
		{"keysets: [{name: a, algorithm: ES256, custody: {type: vault_transit}}]\n", "keysets[0].custody.type: vault_transit uses the Vault connection of storage.vault"},
		{vault + "keysets: [{name: a, algorithm: ES256, custody: {type: vault_transit}, certificates: {self_signed: true}}]\n", "cannot sign their own certificates"},
		{"keysets: [{name: a, algorithm: ES256, custody: {type: pkcs11}}]\n", "keysets[0].custody.module: is required"},
		{"keysets: [{name: a, algorithm: ES256, custody: {type: hsm}}]\n", `keysets[0].custody.type: "hsm" is not a custody`},
		{"keysets: [{name: a, algorithm: ES256, custody: {mount: transit}}]\n", "keysets[0].custody.type: is required with mount"},
		{vault + "keysets: [{name: a, algorithm: ES256, custody: {type: vault_transit, max_in_flight: -1}}]\n", "keysets[0].custody.max_in_flight: -1 is not between 1 and 1024"},
		{"keysets: [{name: a, algorithm: ES256, custody: {max_in_flight: 8}}]\n", "keysets[0].custody.type: is required with mount, key_prefix or max_in_flight"},
	} {
		if _, err := config.Parse(strings.NewReader(c.src), "t"); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v\nwant %q", c.src, err, c.want)
		}
	}
	for _, alg := range []string{"PS256", "HS256", "EdDSA"} {
		if _, err := config.Parse(strings.NewReader(vault+"keysets: [{name: a, algorithm: "+alg+", custody: {type: vault_transit, mount: transit, key_prefix: app-, max_in_flight: 16}}]\n"), "t"); err != nil {
			t.Fatalf("a Transit key set of %s: %v", alg, err)
		}
	}
}
