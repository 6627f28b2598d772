package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/keyd-dev/keyd/backends/file"
	"github.com/keyd-dev/keyd/internal/config"
)

// TestMigrateSeedAppTokens moves a seed app to keyd as its team would:
// tokens minted by PyJWT exactly as the seed apps do (HS256 from a
// SECRET_KEY with no kid, with and without exp; RS256 from an openssl
// PEM with kid key-2024) keep verifying once the secret and the PEM are
// imported, while the legacy setting lasts; keyd's new tokens verify with
// PyJWT's PyJWKClient, and so does the old RS256 token, through keyd's
// JWKS; after legacy.until, tokens without a kid are refused.
func TestMigrateSeedAppTokens(t *testing.T) {
	python := pyjwt(t)
	dir := t.TempDir()
	pemPath := filepath.Join(dir, "old.pem")
	if out, err := exec.Command("openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", pemPath).CombinedOutput(); err != nil {
		t.Fatalf("openssl genpkey: %v\n%s", err, out)
	}
	const secret = "the-seed-apps-SECRET_KEY-0123456789abcdef"
	minted, err := exec.Command(python, "testdata/seed_app.py", "mint", secret, pemPath).CombinedOutput()
	if err != nil {
		t.Fatalf("PyJWT mint: %v\n%s", err, minted)
	}
	old := strings.Fields(string(minted))
	if len(old) != 4 {
		t.Fatalf("minted: %s", minted)
	}
	config := func(until time.Time) string {
		cfg := fmt.Sprintf(`listen: 127.0.0.1:0
storage: {backend: file, file: {path: %q}}
keysets:
  - {name: legacy, algorithm: HS256, rotation: "@daily", token_ttl: 10m, jwks_max_age: 1m,
     legacy: {kid: flask, until: %q, allow_missing_exp: true}}
  - {name: app, algorithm: RS256, rotation: "@daily", token_ttl: 10m, jwks_max_age: 1m}
auth:
  tokens:
    - {name: ops, sha256: %q, scopes: [admin]}
    - {name: svc, sha256: %q, scopes: ["sign:*", "verify:*"]}
`, filepath.Join(dir, "keyd.db"), until.UTC().Format(time.RFC3339), config.TokenHash(adminToken), config.TokenHash(serviceToken))
		path := filepath.Join(dir, "keyd.yaml")
		writeFile(t, path, []byte(cfg))
		return path
	}
	masterKey, _ := file.NewMasterKey()
	env := []string{"KEYD_MASTER_KEY=" + masterKey}
	d := startDaemon(t, env, "--config", config(time.Now().Add(time.Hour)))
	rec := &recorder{}
	verify := func(d *daemonProc, keyset, tok string) string {
		t.Helper()
		status, body, _ := rec.call(t, "POST", d.addr+"/v1/keysets/"+keyset+"/verify", serviceToken, `{"token":"`+tok+`"}`)
		if status != 200 {
			t.Fatalf("verify: %d %s", status, body)
		}
		if m := regexp.MustCompile(`"code":"([a-z_]+)"`).FindSubmatch(body); m != nil {
			return string(m[1])
		}
		return "valid"
	}
	if got := verify(d, "legacy", old[0]); got != "unknown_key" {
		t.Fatalf("before the import: %s", got)
	}
	cli := []string{"KEYD_ADDR=" + d.addr, "KEYD_TOKEN=" + adminToken}
	if code, out := runKeyd(t, cli, secret+"\n", "import-key", "legacy", "--secret", "--kid", "flask"); code != 0 || strings.Contains(out, secret) {
		t.Fatalf("import the secret: %d %s", code, out)
	}
	if code, out := runKeyd(t, cli, "", "import-key", "app", "--file", pemPath, "--kid", "key-2024", "--verify-until", "2h"); code != 0 || !strings.Contains(out, "key-2024") {
		t.Fatalf("import the PEM: %d %s", code, out)
	}
	for i, want := range []struct{ keyset, tok string }{{"legacy", old[0]}, {"legacy", old[1]}, {"app", old[2]}} {
		if got := verify(d, want.keyset, want.tok); got != "valid" {
			t.Errorf("seed token %d after the import: %s", i, got)
		}
	}
	// The operator sees the legacy traffic: metric and status.
	_, metrics, _ := rec.call(t, "GET", d.addr+"/metrics", "", "")
	if !strings.Contains(string(metrics), `keyd_legacy_verifications_total{keyset="legacy"} 2`) {
		t.Errorf("legacy metric:\n%s", grepLines(string(metrics), "legacy"))
	}
	if code, out := runKeyd(t, cli, "", "status"); code != 0 || !strings.Contains(out, "legacy: tokens without a kid verify with flask until") {
		t.Errorf("keyd status: %d %s", code, out)
	}
	// New tokens come from keyd's own key; PyJWT verifies them, and the old
	// RS256 token, through keyd's JWKS.
	status, body, _ := rec.call(t, "POST", d.addr+"/v1/keysets/app/sign", serviceToken, `{"claims":{"sub":"dave"}}`)
	fresh := regexp.MustCompile(`"token":"([^"]+)"`).FindSubmatch(body)
	if status != 200 || fresh == nil {
		t.Fatalf("sign: %d %s", status, body)
	}
	cmd := exec.Command(python, "testdata/seed_app.py", "verify", d.addr+"/v1/keysets/app/jwks.json", "RS256")
	cmd.Stdin = strings.NewReader(string(fresh[1]) + "\n" + old[2])
	out, err := cmd.CombinedOutput()
	if err != nil || strings.Join(strings.Fields(string(out)), " ") != "valid dave valid carol" {
		t.Fatalf("PyJWKClient: %v\n%s", err, out)
	}
	// The PyJWT helper of examples/ follows the same legacy rule: the
	// kid-less RS256 token verifies with key-2024 alone while the setting
	// lasts, and not without it.
	helper := func(env ...string) string {
		cmd := exec.Command(python, "-c", `import sys, keyd_auth
try:
    print("valid", keyd_auth.verify("Bearer " + sys.argv[1])["sub"])
except keyd_auth.Unauthorized as e:
    print(e.code)`, old[3])
		cmd.Dir = "../../examples/python"
		cmd.Env = append(os.Environ(), append([]string{"KEYD_URL=" + d.addr, "KEYD_KEYSET=app", "KEYD_ALG=RS256"}, env...)...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("the PyJWT helper: %v\n%s", err, out)
		}
		return strings.TrimSpace(string(out))
	}
	until := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	if got := helper("KEYD_LEGACY_KID=key-2024", "KEYD_LEGACY_UNTIL="+until, "KEYD_LEGACY_ALLOW_MISSING_EXP=1"); got != "valid erin" {
		t.Errorf("the helper with the legacy setting: %s", got)
	}
	if got := helper(); got == "valid erin" {
		t.Errorf("the helper without the legacy setting accepted a token without a kid")
	}
	if got := helper("KEYD_LEGACY_KID=key-2024", "KEYD_LEGACY_UNTIL="+until); got != "missing_claim" {
		t.Errorf("the helper without allow_missing_exp: %s", got)
	}
	d.stop()

	// Past legacy.until, tokens without a kid are refused; kid'd ones are not.
	d = startDaemon(t, env, "--config", config(time.Now().Add(-time.Minute)))
	if got := verify(d, "legacy", old[1]); got != "unknown_key" {
		t.Errorf("a token without a kid after legacy.until: %s", got)
	}
	if got := verify(d, "app", old[2]); got != "valid" {
		t.Errorf("the RS256 token with its kid: %s", got)
	}
	d.stop()
}

func grepLines(s, word string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, word) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
