package verify_test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestClientPackagesAreLight: a service that verifies keyd's tokens, or
// calls keyd, compiles keyd's wire packages and its JOSE library, nothing
// of the daemon (the revocation list's types once pulled in the signer,
// the key store and the token state: 55 packages).
func TestClientPackagesAreLight(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "github.com/keyd-dev/keyd/verify", "github.com/keyd-dev/keyd/client").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	allowed := map[string]bool{"verify": true, "client": true, "tokencheck": true, "errcode": true}
	for line := range strings.Lines(string(out)) {
		pkg, ok := strings.CutPrefix(strings.TrimSpace(line), "github.com/keyd-dev/keyd/")
		if ok && !allowed[pkg] {
			t.Errorf("a client package compiles %s of the daemon", pkg)
		}
	}
}
