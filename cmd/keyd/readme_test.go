package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/keyd-dev/keyd/backends/file"
	"github.com/keyd-dev/keyd/internal/config"
)

// shellBlocks are the ```sh blocks of the document at path, in order.
func shellBlocks(t *testing.T, path string) []string {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, m := range regexp.MustCompile("(?s)```sh\n(.*?)```").FindAllStringSubmatch(string(raw), -1) {
		out = append(out, m[1])
	}
	return out
}

// runDoc runs script with bash -euo pipefail in dir, where ./keyd is the
// binary under test (a go build line of the script is skipped) and
// http://127.0.0.1:8080 is addr; it returns what the script printed.
func runDoc(t *testing.T, dir, addr, script string, env ...string) string {
	t.Helper()
	if _, err := os.Stat(filepath.Join(dir, "keyd")); err != nil {
		bin, err := os.ReadFile(keydBinary)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "keyd"), bin, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	var lines []string
	for _, line := range strings.Split(script, "\n") {
		if !strings.HasPrefix(line, "go build ") {
			lines = append(lines, strings.ReplaceAll(line, "http://127.0.0.1:8080", addr))
		}
	}
	cmd := exec.Command("bash", "-euo", "pipefail", "-c", strings.Join(lines, "\n"))
	cmd.Dir = dir
	cmd.Env = append(append(os.Environ(), "KEYD_TOKEN=", "KEYD_ADDR="), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%v\n%s\n--- the script:\n%s", err, out, strings.Join(lines, "\n"))
	}
	return string(out)
}

// TestDocsShellBlocks runs the docs' shell blocks a newcomer runs, as
// written, against fresh keyds: the README's quick start (on the embedded
// default its first block starts), then docs/revocation.md's revocations
// in the same shell; and the token pairs of docs/revocation.md against a
// keyd with a key set app that has refresh.ttl. Each command must succeed
// and say what the docs say it does.
func TestDocsShellBlocks(t *testing.T) {
	readme, revocation := shellBlocks(t, "../../README.md"), shellBlocks(t, "../../docs/revocation.md")
	if len(readme) < 2 || !strings.Contains(readme[0], "go run ./cmd/keyd serve") || len(revocation) < 2 ||
		!strings.Contains(revocation[0], "revoke-token") || !strings.Contains(revocation[1], "token-pair") {
		t.Fatal("the docs' shell blocks are not where this test reads them")
	}
	dir := t.TempDir()
	d := startDaemon(t, []string{"KEYD_MASTER_KEY="}, "--data", filepath.Join(dir, "keyd-data"), "--listen", "127.0.0.1:0")
	defer d.stop()
	out := runDoc(t, dir, d.addr, readme[1]+"\n"+revocation[0])
	for _, want := range []string{`"valid": true`, `"valid":true`, `"sub": "alice"`, `{"keys":[{"alg":"ES256"`, "ready, store ok", "default  ES256",
		`"in_force":1`, "laptop stolen", "carol", "bob's token: refused"} {
		if !strings.Contains(out, want) {
			t.Errorf("the quick start and revocations say nothing of %q:\n%s", want, out)
		}
	}

	// Token pairs, on a key set app with refresh.ttl.
	dir2 := t.TempDir()
	mk, _ := file.NewMasterKey()
	cfg := filepath.Join(dir2, "keyd.yaml")
	writeFile(t, cfg, fmt.Appendf(nil, `listen: 127.0.0.1:0
storage: {backend: file, file: {path: %q}}
keysets:
  - {name: app, algorithm: ES256, refresh: {ttl: 720h}}
auth:
  tokens: [{name: ops, sha256: %q, scopes: [admin, "sign:app"]}]
`, filepath.Join(dir2, "keyd.db"), config.TokenHash(adminToken)))
	d2 := startDaemon(t, []string{"KEYD_MASTER_KEY=" + mk}, "--config", cfg)
	defer d2.stop()
	out = runDoc(t, dir2, d2.addr, revocation[1], "KEYD_ADDR="+d2.addr, "KEYD_TOKEN="+adminToken)
	for _, want := range []string{`"refresh_token":"krt_`, `"token_type":"Bearer"`, `"login": "`, `"sub": "alice"`} {
		if !strings.Contains(out, want) {
			t.Errorf("the token pairs block says nothing of %q:\n%s", want, out)
		}
	}
}

// TestDocsLinksResolve: every relative link of the README and docs/ names
// a file that exists, and an anchor a heading of it makes (GitHub's rule:
// lower case, punctuation dropped, spaces to hyphens).
func TestDocsLinksResolve(t *testing.T) {
	root := "../.."
	files := []string{"README.md"}
	docs, _ := filepath.Glob(filepath.Join(root, "docs", "*.md"))
	for _, d := range docs {
		rel, _ := filepath.Rel(root, d)
		files = append(files, rel)
	}
	code := regexp.MustCompile("(?s)```.*?```")
	link := regexp.MustCompile(`\[[^\]]+\]\(([^)\s]+)\)`)
	for _, f := range files {
		raw, err := os.ReadFile(filepath.Join(root, f))
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range link.FindAllStringSubmatch(code.ReplaceAllString(string(raw), ""), -1) {
			target := m[1]
			if regexp.MustCompile(`^[a-z]+:`).MatchString(target) {
				continue // a URL
			}
			path, anchor, _ := strings.Cut(target, "#")
			file := filepath.Join(root, f)
			if path != "" {
				file = filepath.Join(root, filepath.Dir(f), path)
			}
			if _, err := os.Stat(file); err != nil {
				t.Errorf("%s links to %s: no such file", f, target)
				continue
			}
			if anchor != "" && strings.HasSuffix(file, ".md") && !headingAnchors(t, file)[anchor] {
				t.Errorf("%s links to %s: no such heading", f, target)
			}
		}
	}
}

// headingAnchors are the anchors of the headings of the markdown at path.
func headingAnchors(t *testing.T, path string) map[string]bool {
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	inCode := false
	for _, l := range strings.Split(string(raw), "\n") {
		if strings.HasPrefix(l, "```") {
			inCode = !inCode
		}
		if inCode || !strings.HasPrefix(l, "#") {
			continue
		}
		h := strings.ToLower(strings.TrimSpace(strings.TrimLeft(l, "#")))
		h = regexp.MustCompile(`[^\w\- ]`).ReplaceAllString(h, "")
		out[strings.ReplaceAll(h, " ", "-")] = true
	}
	return out
}
