// Package testhsm makes SoftHSM2 tokens for tests (Debian's softhsm2, with
// opensc's pkcs11-tool): each test gets its own SOFTHSM2_CONF and token
// folder, initialised with softhsm2-util. Without SoftHSM the test is
// skipped, or fails where KEYD_REQUIRE_PKCS11 is set (scripts/test.sh).
package testhsm

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// Module is Debian's SoftHSM2 PKCS#11 library.
const Module = "/usr/lib/softhsm/libsofthsm2.so"

// Token is a fresh token.
type Token struct {
	Label, PIN string
	Conf       string // the SOFTHSM2_CONF file naming its folder
}

// New makes a token for t and points SOFTHSM2_CONF at it for t's process
// (a daemon the test starts needs Env too).
func New(t testing.TB) Token {
	t.Helper()
	if _, err := os.Stat(Module); err != nil {
		msg := "no SoftHSM2 (apt-get install softhsm2 opensc)"
		if os.Getenv("KEYD_REQUIRE_PKCS11") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "tokens"), 0o700); err != nil {
		t.Fatal(err)
	}
	tok := Token{Label: "keyd-test", PIN: "1234", Conf: filepath.Join(dir, "softhsm2.conf")}
	if err := os.WriteFile(tok.Conf, []byte("directories.tokendir = "+filepath.Join(dir, "tokens")+"\nobjectstore.backend = file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("SOFTHSM2_CONF", tok.Conf)
	if out, err := exec.Command("softhsm2-util", "--init-token", "--free", "--label", tok.Label, "--pin", tok.PIN, "--so-pin", "5678").CombinedOutput(); err != nil {
		t.Fatalf("softhsm2-util --init-token: %v\n%s", err, out)
	}
	return tok
}

// Env is what a process needs to see the token, and its PIN as keyd reads it.
func (tok Token) Env() []string {
	return []string{"SOFTHSM2_CONF=" + tok.Conf, "KEYD_PKCS11_PIN=" + tok.PIN}
}

// Tool runs pkcs11-tool against the token, logged in; it returns the
// output.
func (tok Token) Tool(t testing.TB, args ...string) string {
	t.Helper()
	out, _ := exec.Command("pkcs11-tool", append([]string{"--module", Module, "--token-label", tok.Label, "--login", "--pin", tok.PIN}, args...)...).CombinedOutput()
	return string(out)
}
