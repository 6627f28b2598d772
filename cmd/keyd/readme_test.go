package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestREADMEQuickStart runs the README's quick start as written, against
// a fresh keyd started as its first block says (serve, no config, the
// embedded default): the second block, in a folder holding keyd-data, with
// ./keyd the binary under test (its go build line skipped) and KEYD_ADDR
// the daemon's port. Each command must succeed and say what the README
// says it does.
func TestREADMEQuickStart(t *testing.T) {
	raw, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks := regexp.MustCompile("(?s)```sh\n(.*?)```").FindAllStringSubmatch(string(raw), -1)
	if len(blocks) < 2 || !strings.Contains(blocks[0][1], "go run ./cmd/keyd serve") {
		t.Fatalf("the README's quick start blocks are not where this test reads them: %d blocks", len(blocks))
	}
	dir := t.TempDir()
	d := startDaemon(t, []string{"KEYD_MASTER_KEY="}, "--data", filepath.Join(dir, "keyd-data"), "--listen", "127.0.0.1:0")
	defer d.stop()
	bin, err := os.ReadFile(keydBinary)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "keyd"), bin, 0o755); err != nil {
		t.Fatal(err)
	}
	var script []string
	for _, line := range strings.Split(blocks[1][1], "\n") {
		if strings.HasPrefix(line, "go build ") {
			continue // ./keyd is the binary under test
		}
		script = append(script, strings.ReplaceAll(line, "http://127.0.0.1:8080", d.addr))
	}
	cmd := exec.Command("bash", "-euo", "pipefail", "-c", strings.Join(script, "\n"))
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "KEYD_TOKEN=", "KEYD_ADDR=")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("the README's quick start: %v\n%s", err, out)
	}
	for _, want := range []string{`"valid": true`, `"valid":true`, `"sub": "alice"`, `{"keys":[{"alg":"ES256"`, "ready, store ok", "default  ES256"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("the quick start's output lacks %q:\n%s", want, out)
		}
	}
}
