package main

import (
	"bytes"
	"encoding/json"
	"net"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/keyd-dev/keyd/internal/api/apitest"
	"github.com/keyd-dev/keyd/keystore"
)

// runCLI runs keyd's command line in process.
func runCLI(stdin string, args ...string) (code int, stdout, stderr string) {
	var out, errOut bytes.Buffer
	code = run(args, strings.NewReader(stdin), &out, &errOut)
	return code, out.String(), errOut.String()
}

// A token in KEYD_TOKEN must never appear in any help text, usage message
// or flag error of any command: they end up in terminals and CI logs.
func TestHelpAndUsageNeverShowTheToken(t *testing.T) {
	const secret = "kd_Sup3rS3cretAdminToken-do-not-print"
	t.Setenv("KEYD_TOKEN", secret)
	t.Setenv("KEYD_ADDR", "http://127.0.0.1:1") // nothing listens: no call may succeed
	commands := []string{"serve", "token", "audit"}
	for name := range clientCommands {
		commands = append(commands, name)
	}
	slices.Sort(commands)
	for _, cmd := range commands {
		for _, args := range [][]string{
			{cmd, "--help"}, {cmd, "-h"}, {cmd, "x", "--help"}, {"--token", secret, cmd, "--help"},
			{cmd, "--no-such-flag"}, {cmd, "--ttl", "5", "x"}, {cmd, "a", "b", "c", "d"},
		} {
			code, out, errOut := runCLI("", args...)
			if strings.Contains(out+errOut, secret) {
				t.Errorf("keyd %q printed the token:\n%s%s", args, out, errOut)
			}
			if args[len(args)-1] == "--help" || args[len(args)-1] == "-h" {
				if code != 0 || !strings.Contains(out, "Usage: keyd "+cmd) {
					t.Errorf("keyd %q: exit %d, stdout %q: want its usage and exit 0", args, code, out)
				}
				if cmd != "serve" && strings.Contains(out, "-listen") {
					t.Errorf("keyd %s --help shows serve's flags:\n%s", cmd, out)
				}
			} else if code == 0 {
				t.Errorf("keyd %q succeeded", args)
			}
		}
	}
	for _, args := range [][]string{{"--help"}, {"help"}, {"nope"}, {}} {
		_, out, errOut := runCLI("", args...)
		if strings.Contains(out+errOut, secret) {
			t.Errorf("keyd %q printed the token", args)
		}
	}
}

func TestCommandHelpIsItsOwn(t *testing.T) {
	code, out, _ := runCLI("", "rotate", "--help")
	if code != 0 || !strings.Contains(out, "Usage: keyd rotate [flags] KEYSET") || !strings.Contains(out, "-force") ||
		strings.Contains(out, "-ttl") || strings.Contains(out, "-jti") {
		t.Fatalf("rotate --help (exit %d):\n%s", code, out)
	}
	code, out, _ = runCLI("", "serve", "--help")
	if code != 0 || !strings.Contains(out, "-listen") || strings.Contains(out, "-token") {
		t.Fatalf("serve --help (exit %d):\n%s", code, out)
	}
}

// Flags work before the command (connection flags), between and after the
// positional arguments, against a real API on loopback.
func TestFlagsInAnyPosition(t *testing.T) {
	srv := apitest.Serve(t, nil, keystore.Policy{
		Name: "default", Algorithm: keystore.ES256, Rotation: "@daily", TokenTTL: 15 * time.Minute,
		JWKSMaxAge: 5 * time.Minute, Leeway: time.Minute, RefreshTTL: time.Hour,
	})
	t.Setenv("KEYD_ADDR", "http://127.0.0.1:1")
	t.Setenv("KEYD_TOKEN", "")
	admin := []string{"--addr", srv.URL, "--token=" + apitest.AdminToken}

	// keyd --addr A --token=T rotate default --force: too early without --force,
	// so success shows --force was read after the key set.
	code, out, errOut := runCLI("", append(admin, "rotate", "default", "--force")...)
	if code != 0 || !strings.Contains(out, "retired") {
		t.Fatalf("rotate default --force: exit %d\n%s%s", code, out, errOut)
	}
	code, out, errOut = runCLI("", append(admin, "keysets", "default")...)
	if code != 0 || !strings.Contains(out, "next rotation:") || !strings.Contains(out, "ES256") {
		t.Fatalf("keysets default: exit %d\n%s%s", code, out, errOut)
	}

	t.Setenv("KEYD_ADDR", srv.URL)
	t.Setenv("KEYD_TOKEN", apitest.ServiceToken)
	code, tok, errOut := runCLI(`{"sub": "alice"}`, "sign", "default", "--ttl", "1m")
	if code != 0 || strings.Count(tok, ".") != 2 {
		t.Fatalf("sign default --ttl 1m: exit %d\n%s%s", code, tok, errOut)
	}
	code, out, errOut = runCLI(tok, "verify", "default")
	var v struct {
		Valid  bool
		Claims map[string]any
	}
	if code != 0 || json.Unmarshal([]byte(out), &v) != nil || !v.Valid || v.Claims["exp"].(float64)-v.Claims["iat"].(float64) != 60 {
		t.Fatalf("the token signed with --ttl after the key set: exit %d\n%s%s", code, out, errOut)
	}

	// No claims is refused, not signed as {}; claims that are not an object
	// say so.
	for stdin, want := range map[string]string{"": "no claims", "  \n": "no claims", `["a"]`: "JSON object", `{"sub":`: "not valid JSON"} {
		code, out, errOut = runCLI(stdin, "sign", "default")
		if code != 1 || out != "" || !strings.Contains(errOut, want) {
			t.Errorf("sign with stdin %q: exit %d, stdout %q, stderr %q (want %q)", stdin, code, out, errOut, want)
		}
	}

	// token-pair, refresh and sign-batch.
	code, out, errOut = runCLI(`{"sub": "bob"}`, "token-pair", "default")
	var pair struct{ AccessToken, RefreshToken string }
	if code != 0 || json.Unmarshal([]byte(out), &struct {
		A *string `json:"access_token"`
		R *string `json:"refresh_token"`
	}{&pair.AccessToken, &pair.RefreshToken}) != nil || pair.RefreshToken == "" {
		t.Fatalf("token-pair: exit %d\n%s%s", code, out, errOut)
	}
	code, out, errOut = runCLI(pair.RefreshToken, "refresh", "default")
	if code != 0 || !strings.Contains(out, `"refresh_token"`) || strings.Contains(out, pair.RefreshToken) {
		t.Fatalf("refresh: exit %d\n%s%s", code, out, errOut)
	}
	if code, _, errOut = runCLI(pair.RefreshToken, "refresh", "default"); code != 1 || !strings.Contains(errOut, "refresh_token_reused") {
		t.Fatalf("a spent refresh token again: exit %d, %s", code, errOut)
	}
	code, out, errOut = runCLI("{\"sub\": \"a\"}\n\n{\"sub\": \"b\", \"exp\": 1}\n{\"sub\": \"c\"}\n", "sign-batch", "default")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != 1 || len(lines) != 3 || strings.Count(lines[0], ".") != 2 || !strings.HasPrefix(lines[1], "error ") ||
		strings.Count(lines[2], ".") != 2 || !strings.Contains(errOut, "1 of 3 items refused") {
		t.Fatalf("sign-batch with one bad item: exit %d\n%s%s", code, out, errOut)
	}
}

// keyd import-key reads the key from a file or stdin, never the command
// line, and never prints it.
func TestImportKeyCommand(t *testing.T) {
	srv := apitest.Serve(t, nil, keystore.Policy{Name: "legacy", Algorithm: keystore.HS256, Rotation: "@daily",
		TokenTTL: 15 * time.Minute, JWKSMaxAge: 5 * time.Minute, Leeway: time.Minute})
	t.Setenv("KEYD_ADDR", srv.URL)
	t.Setenv("KEYD_TOKEN", apitest.AdminToken)
	const secret = "flask-SECRET_KEY-that-is-quite-long-enough!"
	code, out, errOut := runCLI(secret+"\n", "import-key", "legacy", "--secret", "--kid", "flask", "--verify-until", "720h")
	if code != 0 || !strings.Contains(out, "flask") || !strings.Contains(out, "retired") || strings.Contains(out+errOut, secret) {
		t.Fatalf("import-key --secret: exit %d\n%s%s", code, out, errOut)
	}
	ks, _, err := srv.Manager.KeySet("legacy")
	if err != nil {
		t.Fatal(err)
	}
	k, ok := ks.Key("flask")
	if !ok || string(k.Material) != secret || k.VerifyUntil.Before(time.Now().Add(719*time.Hour)) {
		t.Fatalf("stored key: %v %v (the trailing newline must be dropped, verify_until in 720h)", ok, k.VerifyUntil)
	}
	code, _, errOut = runCLI("changeme", "import-key", "legacy", "--secret", "--kid", "weak")
	if code != 0 || !strings.Contains(errOut, "warning:") {
		t.Fatalf("a short secret verify-only: exit %d, %s", code, errOut)
	}
	if code, _, errOut := runCLI("not a key", "import-key", "legacy"); code != 1 || !strings.Contains(errOut, "--secret") {
		t.Fatalf("unknown input: exit %d, %s", code, errOut)
	}
}

// A port in use fails before anything is made on disk, and says how to
// pick another.
func TestListenFailsBeforeTheDataFolder(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	data := filepath.Join(t.TempDir(), "keyd-data")
	code, _, errOut := runCLI("", "serve", "--data", data, "--listen", busy.Addr().String())
	if code != 1 || !strings.Contains(errOut, "listen on "+busy.Addr().String()) || !strings.Contains(errOut, "--listen") {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	if _, err := os.Stat(data); !os.IsNotExist(err) {
		t.Fatalf("the data folder was made before the listen failed: %v", err)
	}
}

// Plain HTTP against an HTTPS keyd, and an HTTPS keyd whose CA is not
// trusted, say what to set.
func TestTLSMistakesSayWhatToSet(t *testing.T) {
	h, _ := apitest.Handler(t, apitest.Options{}, keystore.Policy{Name: "default", Algorithm: keystore.ES256, Rotation: "@daily",
		TokenTTL: 15 * time.Minute, JWKSMaxAge: 5 * time.Minute})
	srv := httptest.NewTLSServer(h)
	defer srv.Close()
	t.Setenv("KEYD_TOKEN", apitest.AdminToken)
	t.Setenv("KEYD_CA_FILE", "")
	for addr, want := range map[string]string{
		strings.Replace(srv.URL, "https://", "http://", 1): "use https:// in the address (KEYD_ADDR)",
		srv.URL: "set KEYD_CA_FILE",
	} {
		t.Setenv("KEYD_ADDR", addr)
		if code, _, errOut := runCLI("", "keysets"); code != 1 || !strings.Contains(errOut, want) {
			t.Errorf("%s: exit %d: %s (want %q)", addr, code, errOut, want)
		}
	}
}

func TestVersion(t *testing.T) {
	for _, arg := range []string{"version", "--version"} {
		code, out, _ := runCLI("", arg)
		if code != 0 || !strings.HasPrefix(out, "keyd ") || !strings.Contains(out, runtime.Version()) || !strings.Contains(out, "tags ") {
			t.Errorf("keyd %s: exit %d: %q", arg, code, out)
		}
	}
}
