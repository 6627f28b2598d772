package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keyd-dev/keyd/backends/file"
	"github.com/keyd-dev/keyd/internal/config"
)

// TestFlaskHS256ThroughKeyd: a Flask service whose tokens were PyJWT
// HS256 with a SECRET_KEY moves to keyd's HS256 key set (the secret
// imported as its legacy key): the examples' helper verifies through
// keyd's verify endpoint, so keyd's new tokens and the old kid-less ones
// both pass, a wrong audience, garbage and a revoked token get keyd's
// codes in a 401, and keyd down is a 503, not a 500. Before, the helper
// asked an HS256 key set's JWKS for keys and raised PyJWKSetError.
func TestFlaskHS256ThroughKeyd(t *testing.T) {
	if err := pythonHas("flask", "jwt")(); err != nil {
		if os.Getenv("KEYD_REQUIRE_EXAMPLES") != "" {
			t.Fatalf("the flask example cannot run: %v", err)
		}
		t.Skipf("the flask example cannot run here: %v", err)
	}
	dir := t.TempDir()
	cfg := filepath.Join(dir, "keyd.yaml")
	writeFile(t, cfg, fmt.Appendf(nil, `listen: 127.0.0.1:0
storage: {backend: file, file: {path: %q}}
keysets:
  - {name: app, algorithm: HS256, rotation: "@daily", token_ttl: 10m, jwks_max_age: 1m, issuer: "https://keyd.example",
     legacy: {kid: flask, until: %q}}
auth:
  tokens:
    - {name: ops, sha256: %q, scopes: [admin]}
    - {name: svc, sha256: %q, scopes: ["sign:app", "verify:app"]}
`, filepath.Join(dir, "keyd.db"), time.Now().Add(time.Hour).UTC().Format(time.RFC3339), config.TokenHash(adminToken), config.TokenHash(serviceToken)))
	mk, _ := file.NewMasterKey()
	d := startDaemon(t, []string{"KEYD_MASTER_KEY=" + mk}, "--config", cfg)
	const secret = "the-flask-apps-SECRET_KEY-0123456789abcdef"
	cli := []string{"KEYD_ADDR=" + d.addr, "KEYD_TOKEN=" + adminToken}
	if code, out := runKeyd(t, cli, secret+"\n", "import-key", "app", "--secret", "--kid", "flask"); code != 0 {
		t.Fatalf("import the SECRET_KEY: %d %s", code, out)
	}
	old, err := exec.Command("/usr/bin/python3", "-c", `import jwt, time, sys
print(jwt.encode({"sub": "bob", "aud": "billing", "iss": "https://keyd.example", "iat": int(time.time()), "exp": int(time.time()) + 600}, sys.argv[1], algorithm="HS256"))`, secret).Output()
	if err != nil {
		t.Fatal(err)
	}
	app := startExample(t, []string{"/usr/bin/python3", "flask_app.py"}, "../../examples/python", d.addr, "KEYD_ALG=HS256")
	w := &tokenWorld{t: t, rec: &recorder{}}
	sign := func(claims string) string {
		status, body := w.call(d, "/v1/keysets/app/sign", serviceToken, `{"claims":`+claims+`}`)
		if status != 200 {
			t.Fatalf("sign: %d %s", status, body)
		}
		return w.field(body, "token")
	}
	me := func(token string) (int, string) {
		req, _ := http.NewRequest("GET", app+"/api/me", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	fresh := sign(`{"sub":"alice","aud":"billing"}`)
	for _, c := range []struct {
		what, token string
		status      int
		contains    string
	}{
		{"keyd's own HS256 token", fresh, 200, `"user":"alice"`},
		{"the old PyJWT token without a kid", strings.TrimSpace(string(old)), 200, `"user":"bob"`},
		{"another audience", sign(`{"sub":"alice","aud":"ledger"}`), 401, "invalid_audience"},
		{"garbage", "garbage", 401, "malformed_token"},
	} {
		if status, body := me(c.token); status != c.status || !strings.Contains(body, c.contains) {
			t.Fatalf("%s: %d %s, want %d %s", c.what, status, body, c.status, c.contains)
		}
	}
	if status, out := w.call(d, "/v1/keysets/app/revocations", adminToken, fmt.Sprintf(`{"jti":%q,"exp":%d}`, jtiOf(t, fresh), time.Now().Add(10*time.Minute).Unix())); status != 200 {
		t.Fatalf("revoke: %d %s", status, out)
	}
	if status, body := me(fresh); status != 401 || !strings.Contains(body, "token_revoked") {
		t.Fatalf("a revoked token: %d %s", status, body)
	}
	d.stop()
	if status, body := me(fresh); status != 503 || !strings.Contains(body, "keyd_unavailable") {
		t.Fatalf("keyd down: %d %s, want 503 keyd_unavailable", status, body)
	}
}
