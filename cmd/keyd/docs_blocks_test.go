package main

import (
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"

	"github.com/lestrrat-go/jwx/v3/jwk"

	"github.com/keyd-dev/keyd/backends/file"
	"github.com/keyd-dev/keyd/internal/config"
	"github.com/keyd-dev/keyd/internal/testnet"
)

// docsBlocksRun are the shell blocks of the README and docs/ that a docs
// test runs, by file and index among the file's ```sh blocks. Every other
// block says why not, and which test covers it instead, in a comment line
// just before it ("<!-- not run by the docs test: ... -->").
var docsBlocksRun = map[string][]int{
	"README.md":           {0, 1}, // TestDocsShellBlocks (0: the serve it starts the same way)
	"docs/revocation.md":  {0, 1}, // TestDocsShellBlocks
	"docs/importing.md":   {0},    // TestDocsOperatorBlocks, and the rest of it:
	"docs/token-state.md": {0},
	"docs/backup.md":      {0, 1, 2, 3},
}

const notRunMarker = "<!-- not run by the docs test: "

// TestEveryDocsShellBlockIsRun: a shell block a newcomer copies is either
// run by a docs test or says why not and what runs it instead, so a new
// block cannot go untested by accident.
func TestEveryDocsShellBlockIsRun(t *testing.T) {
	files, _ := filepath.Glob("../../docs/*.md")
	files = append(files, "../../README.md")
	block := regexp.MustCompile("(?m)^```(sh|bash|shell|console)\n")
	for _, path := range files {
		raw, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		name, _ := filepath.Rel("../..", path)
		run := map[int]bool{}
		for _, i := range docsBlocksRun[name] {
			run[i] = true
		}
		for i, loc := range block.FindAllStringSubmatchIndex(string(raw), -1) {
			if lang := string(raw[loc[2]:loc[3]]); lang != "sh" {
				t.Errorf("%s: block %d is ```%s: shell blocks are ```sh, which the docs test reads", name, i, lang)
			}
			before := strings.TrimRight(string(raw[:loc[0]]), "\n")
			prev := before[strings.LastIndexByte(before, '\n')+1:]
			marked := strings.HasPrefix(prev, notRunMarker) && strings.HasSuffix(prev, "-->")
			switch {
			case run[i] && marked:
				t.Errorf("%s: block %d is run by the docs test and marked as not run", name, i)
			case !run[i] && !marked:
				t.Errorf("%s: block %d is not run by a docs test; run it (docsBlocksRun), or say why not and what covers it: %s...-->", name, i, notRunMarker)
			case marked && !regexp.MustCompile(`Test[A-Z]|CI`).MatchString(prev):
				t.Errorf("%s: block %d says it is not run but names no test that covers it: %s", name, i, prev)
			}
			delete(run, i)
		}
		for i := range run {
			t.Errorf("%s: docsBlocksRun names block %d, which does not exist", name, i)
		}
	}
}

// TestDocsOperatorBlocks runs the operators' blocks of docs/ in order, in
// one shell, as an operator would on one machine, with /etc/keyd/ a
// temporary folder and systemctl starting and stopping keyd there:
// importing keys (importing.md), a denylist (token-state.md), a backup, its
// inspection, a restore into an empty store, and a master key rotation
// (backup.md). Between blocks, the test checks what they did.
func TestDocsOperatorBlocks(t *testing.T) {
	dir := t.TempDir()
	etc, bin := filepath.Join(dir, "etc"), filepath.Join(dir, "bin")
	for _, d := range []string{etc, bin} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if out, err := exec.Command("go", "build", "-o", bin, "filippo.io/age/cmd/age-keygen").CombinedOutput(); err != nil {
		t.Fatalf("building age-keygen: %v\n%s", err, out)
	}
	copyFile(t, keydBinary, filepath.Join(bin, "keyd"))
	if err := os.Chmod(filepath.Join(bin, "keyd"), 0o755); err != nil {
		t.Fatal(err)
	}
	mk, _ := file.NewMasterKey()
	writeFile(t, filepath.Join(etc, "master.key"), []byte(mk))
	addr := fmt.Sprintf("127.0.0.1:%d", testnet.FreePorts(t, 1)[0])
	writeFile(t, filepath.Join(etc, "keyd.yaml"), fmt.Appendf(nil, `listen: %s
storage: {backend: file, file: {path: %q, master_key_file: %q}}
keysets:
  - {name: app, algorithm: RS256}
  - {name: legacy, algorithm: HS256}
auth:
  tokens: [{name: ops, sha256: %q, scopes: [admin, "sign:*", "verify:*"]}]
`, addr, filepath.Join(dir, "keyd.db"), filepath.Join(etc, "master.key"), config.TokenHash(adminToken)))
	for _, name := range []string{"old-private.pem", "signing.pem"} {
		if out, err := exec.Command("openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", filepath.Join(dir, name)).CombinedOutput(); err != nil {
			t.Fatalf("openssl: %v\n%s", err, out)
		}
	}
	issuer := otherIssuer(t)
	t.Cleanup(func() { // keyd, if a block left it running
		if pid, err := os.ReadFile(filepath.Join(dir, "keyd.pid")); err == nil {
			var p int
			fmt.Sscan(string(pid), &p)
			_ = syscall.Kill(p, syscall.SIGKILL)
		}
	})

	importing, tokenState, backup := shellBlocks(t, "../../docs/importing.md"), shellBlocks(t, "../../docs/token-state.md"), shellBlocks(t, "../../docs/backup.md")
	script := strings.Join([]string{
		operatorPrelude,
		importing[0],
		`keyd keysets app; keyd keysets legacy`,
		`printf '{"jti":"deny-1","exp":%d}\n{"sub":"mallory"}\n' $(( $(date +%s) + 3600 )) > denylist.ndjson`,
		tokenState[0],
		`TOKEN=$(echo '{"sub":"alice"}' | keyd sign app); BOB=$(echo '{"sub":"bob"}' | keyd sign app)`,
		`echo "$BOB" | keyd revoke-token app`,
		backup[0], backup[1],
		`systemctl stop keyd; rm keyd.db   # the disk is lost`,
		backup[2],
		`echo "$TOKEN" | keyd verify app >/dev/null && echo "alice's token verifies after the restore"`,
		`echo "$BOB" | keyd verify app || echo "bob's token: still refused after the restore"`,
		`OLD=$(keyd master-key id --key-file /etc/keyd/master.key)`,
		backup[3],
		`[ "$(keyd master-key id --key-file /etc/keyd/master.key)" != "$OLD" ] && echo "the master key changed"`,
		`echo "$TOKEN" | keyd verify app >/dev/null && echo "alice's token verifies under the new master key"`,
	}, "\n")
	script = strings.NewReplacer("/etc/keyd/", etc+"/", "https://old-issuer.example", issuer).Replace(script)
	cmd := exec.Command("bash", "-euo", "pipefail", "-c", script)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "PATH="+bin+":"+os.Getenv("PATH"), "KEYD_ADDR=http://"+addr, "KEYD_TOKEN="+adminToken,
		"SECRET_KEY=flask-secret-key-of-thirty-two-b", "ETC="+etc)
	raw, err := cmd.CombinedOutput()
	out := string(raw)
	if err != nil {
		serveLog, _ := os.ReadFile(filepath.Join(dir, "serve.log"))
		t.Fatalf("%v\n%s\n--- keyd's log:\n%s", err, out, serveLog)
	}
	for _, want := range []string{"key-2024", "key-2025", "other-1", "imported 2 revocations", "key set(s)", "whole:",
		"alice's token verifies after the restore", "bob's token: still refused after the restore",
		"the master key changed", "alice's token verifies under the new master key"} {
		if !strings.Contains(out, want) {
			t.Errorf("the operators' blocks say nothing of %q:\n%s", want, out)
		}
	}
}

// operatorPrelude gives the blocks a systemctl that starts keyd with
// /etc/keyd/keyd.yaml in the background and waits until it is ready, and
// stops it (a stopped keyd stays stopped); then starts it.
const operatorPrelude = `
systemctl() {
  case "$1" in
  stop)
    [ -f keyd.pid ] || return 0
    kill "$(cat keyd.pid)" 2>/dev/null || true
    while kill -0 "$(cat keyd.pid)" 2>/dev/null; do sleep 0.1; done
    rm keyd.pid ;;
  start)
    keyd serve --config "$ETC/keyd.yaml" >> serve.log 2>&1 &
    echo $! > keyd.pid
    for _ in $(seq 300); do curl -sf "$KEYD_ADDR/readyz" >/dev/null && return 0; sleep 0.1; done
    echo "keyd did not start"; return 1 ;;
  esac
}
systemctl start keyd
`

// otherIssuer serves another issuer's JWKS, one RSA key with kid other-1,
// and returns its base URL.
func otherIssuer(t *testing.T) string {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := jwk.Import(k.Public())
	if err != nil {
		t.Fatal(err)
	}
	_ = pub.Set(jwk.KeyIDKey, "other-1")
	_ = pub.Set(jwk.AlgorithmKey, "RS256")
	set := jwk.NewSet()
	_ = set.AddKey(pub)
	doc, _ := json.Marshal(set)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(doc)
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}
