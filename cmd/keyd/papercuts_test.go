package main

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/keyd-dev/keyd/internal/api/apitest"
	"github.com/keyd-dev/keyd/keystore"
)

// TestCLIPapercuts: help spells flags as the docs do (--config), a ttl
// without a unit says so, `keyd version --help` is usage, and a refused
// connection names KEYD_ADDR.
func TestCLIPapercuts(t *testing.T) {
	t.Setenv("KEYD_ADDR", "http://127.0.0.1:1") // nothing listens there
	t.Setenv("KEYD_TOKEN", "")
	if _, out, _ := runCLI("", "serve", "--help"); !strings.Contains(out, "\n  --config string") || strings.Contains(out, "\n  -config") {
		t.Errorf("serve --help spells flags otherwise than the docs:\n%s", out)
	}
	if code, _, errOut := runCLI(`{"sub":"a"}`, "sign", "--ttl", "5", "default"); code != 2 || !strings.Contains(errOut, "5 has no unit: use one, e.g. 5m or 5s") {
		t.Errorf("sign --ttl 5: exit %d\n%s", code, errOut)
	}
	if code, _, errOut := runCLI(`{"sub":"a"}`, "sign", "--ttl", "soon", "default"); code != 2 || !strings.Contains(errOut, `"soon" is not a duration`) {
		t.Errorf("sign --ttl soon: exit %d\n%s", code, errOut)
	}
	if code, out, _ := runCLI("", "version", "--help"); code != 0 || !strings.HasPrefix(out, "Usage: keyd version") {
		t.Errorf("version --help: exit %d\n%s", code, out)
	}
	if code, _, errOut := runCLI(`{"sub":"a"}`, "sign", "default"); code == 0 || !strings.Contains(errOut, "is keyd running there? KEYD_ADDR") {
		t.Errorf("sign against nothing: exit %d\n%s", code, errOut)
	}
}

// TestCLIJSONAndVerifyFlags: status and keysets print JSON for scripts, and
// keyd verify narrows what a token must hold with flags.
func TestCLIJSONAndVerifyFlags(t *testing.T) {
	srv := apitest.Serve(t, nil, keystore.Policy{Name: "es", Algorithm: keystore.ES256, Rotation: "@daily",
		TokenTTL: 15 * time.Minute, JWKSMaxAge: 5 * time.Minute, Leeway: time.Minute})
	t.Setenv("KEYD_ADDR", srv.URL)
	t.Setenv("KEYD_TOKEN", apitest.AdminToken)
	code, out, errOut := runCLI("", "status", "--json")
	var st struct {
		Ready   struct{ Status string } `json:"ready"`
		KeySets []struct{ Name string } `json:"keysets"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &st) != nil || st.Ready.Status != "ready" || len(st.KeySets) != 1 || st.KeySets[0].Name != "es" {
		t.Fatalf("status --json: exit %d\n%s%s", code, out, errOut)
	}
	var ks struct{ Name, Algorithm string }
	if code, out, _ := runCLI("", "keysets", "--json", "es"); code != 0 || json.Unmarshal([]byte(out), &ks) != nil || ks.Algorithm != "ES256" {
		t.Fatalf("keysets --json es: exit %d\n%s", code, out)
	}
	t.Setenv("KEYD_TOKEN", apitest.ServiceToken)
	code, tok, errOut := runCLI(`{"sub":"alice","aud":"billing","iss":"https://a.example"}`, "sign", "es")
	if code != 0 {
		t.Fatalf("sign: %d %s", code, errOut)
	}
	if code, out, _ := runCLI(tok, "verify", "--audience", "billing", "--issuer", "https://a.example", "es"); code != 0 || !strings.Contains(out, `"valid": true`) {
		t.Fatalf("verify with matching flags: exit %d\n%s", code, out)
	}
	if code, out, _ := runCLI(tok, "verify", "--audience", "ledger", "es"); code != 1 || !strings.Contains(out, "invalid_audience") {
		t.Fatalf("verify --audience ledger: exit %d\n%s", code, out)
	}
}

// TestImportKeySays: import-key says what it imported, and an empty input
// says what to give rather than "give exactly one of pem, jwk, jwks or
// secret".
func TestImportKeySays(t *testing.T) {
	srv := apitest.Serve(t, nil, keystore.Policy{Name: "legacy", Algorithm: keystore.HS256, Rotation: "@daily",
		TokenTTL: 15 * time.Minute, JWKSMaxAge: 5 * time.Minute, Leeway: time.Minute})
	t.Setenv("KEYD_ADDR", srv.URL)
	t.Setenv("KEYD_TOKEN", apitest.AdminToken)
	if code, _, errOut := runCLI("", "import-key", "legacy", "--secret", "--kid", "flask"); code != 2 || !strings.Contains(errOut, "nothing to import") {
		t.Fatalf("import-key with empty stdin: exit %d\n%s", code, errOut)
	}
	if code, _, errOut := runCLI("flask-SECRET_KEY-long-enough-to-pass-0123", "import-key", "legacy", "--secret", "--kid", "flask"); code != 0 || !strings.Contains(errOut, "imported flask into legacy as retired") {
		t.Fatalf("import-key: exit %d\n%s", code, errOut)
	}
}

// Ctrl-C stops a client command at once, even one waiting to retry a 503
// whose Retry-After is long: it cancels the request and the command ends
// as a failure (exit 1) saying why, not killed by the signal.
func TestCLIInterruptStopsRetries(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", "30")
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte(`{"error":{"code":"store_unavailable","message":"the store did not answer"}}`))
	}))
	defer srv.Close()
	cmd := exec.Command(keydBinary, "status")
	cmd.Env = append(os.Environ(), "KEYD_ADDR="+srv.URL, "KEYD_TOKEN=x")
	var out lockedLog
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	for !strings.Contains(out.String(), "retrying in 30s") { // the first answer came, the wait began
		time.Sleep(20 * time.Millisecond)
	}
	start := time.Now()
	_ = cmd.Process.Signal(os.Interrupt)
	err := cmd.Wait()
	if took := time.Since(start); took > 5*time.Second || err == nil || cmd.ProcessState.ExitCode() != 1 {
		t.Fatalf("after Ctrl-C: %v (exit %d) after %v\n%s", err, cmd.ProcessState.ExitCode(), took, out.String())
	}
	if !strings.Contains(out.String(), "store_unavailable") {
		t.Fatalf("the command does not say why it stopped:\n%s", out.String())
	}
}

// A kid may start with "-" (base64url): it is an argument, wherever it
// stands, not a flag; a misspelt flag is still refused, saying how to pass
// an argument that starts with -.
func TestDashArguments(t *testing.T) {
	f := newCLIFlags("revoke", "keyd revoke KEYSET KID", "")
	force := f.Bool("force", false, "")
	for _, args := range [][]string{{"default", "-eoo3cJ9wpG2eCNvOx5w3s7BTX"}, {"--force", "default", "-eoo3cJ9wpG2eCNvOx5w3s7BTX"}, {"default", "--", "-abc"}} {
		*force = false
		pos, err := f.parse(args, io.Discard, io.Discard)
		if err != nil || len(pos) != 2 || pos[0] != "default" || !strings.HasPrefix(pos[1], "-") {
			t.Errorf("parse(%q) = %q, %v", args, pos, err)
		}
	}
	if _, err := f.parse([]string{"--forse", "default"}, io.Discard, io.Discard); err == nil || !strings.Contains(err.Error(), "goes after --") {
		t.Errorf("a misspelt flag: %v", err)
	}
}
