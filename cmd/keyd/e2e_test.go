package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	josejwt "github.com/go-jose/go-jose/v4/jwt"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	v1 "k8s.io/externaljwt/apis/v1"

	"github.com/keyd-dev/keyd/backends/file"
	"github.com/keyd-dev/keyd/internal/config"
	"github.com/keyd-dev/keyd/keystore"
)

// The end-to-end tests run the real keyd binary on a loopback port and talk
// to it over HTTP; tokens are checked with go-jose, which shares no code
// with keyd's signer.

var keydBinary string

// buildTags are the tags the tests' keyd is built with: pkcs11 when the
// tests are (pkcs11_e2e_test.go).
var buildTags = ""

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "keyd-e2e-")
	if err != nil {
		panic(err)
	}
	keydBinary = filepath.Join(dir, "keyd")
	build := exec.Command("go", "build", "-tags", buildTags, "-o", keydBinary, ".")
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building keyd:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// daemonProc is a running keyd.
type daemonProc struct {
	t    *testing.T
	cmd  *exec.Cmd
	addr string // http://127.0.0.1:PORT
	mu   sync.Mutex
	logs bytes.Buffer
	done chan error
}

// startDaemon runs keyd serve with args and env and waits until it listens
// and is ready: on a loaded machine the first RSA keys (made at idle
// priority) can take longer than keyd's own start-up timeout, after which
// it listens while still creating them.
func startDaemon(t *testing.T, env []string, args ...string) *daemonProc {
	t.Helper()
	d, err := launch(t, env, args...)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(120 * time.Second)
	for {
		resp, err := http.Get(d.addr + "/readyz")
		if err == nil {
			resp.Body.Close()
			// 503 is "starting"; anything else (200, or a TLS daemon's 400
			// to plain HTTP) means the key sets are loaded or not our test.
			if resp.StatusCode != http.StatusServiceUnavailable {
				return d
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("keyd did not become ready within 120 s:\n%s", d.log())
		}
		time.Sleep(50 * time.Millisecond) // polling the process we started
	}
}

func launch(t *testing.T, env []string, args ...string) (*daemonProc, error) {
	d := &daemonProc{t: t, done: make(chan error, 1)}
	d.cmd = exec.Command(keydBinary, append([]string{"serve", "--log-format", "json"}, args...)...)
	d.cmd.Env = append(os.Environ(), env...)
	stderr, err := d.cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := d.cmd.Start(); err != nil {
		return nil, err
	}
	listening := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			line := sc.Bytes()
			d.mu.Lock()
			d.logs.Write(line)
			d.logs.WriteByte('\n')
			d.mu.Unlock()
			var rec struct {
				Msg  string `json:"msg"`
				Addr string `json:"addr"`
			}
			if json.Unmarshal(line, &rec) == nil && rec.Msg == "keyd listening" {
				listening <- rec.Addr
			}
		}
		d.done <- d.cmd.Wait()
	}()
	t.Cleanup(func() {
		if d.cmd.ProcessState == nil {
			_ = d.cmd.Process.Kill()
			<-d.done
		}
	})
	select {
	case addr := <-listening:
		d.addr = "http://" + addr
		return d, nil
	case err := <-d.done:
		return d, fmt.Errorf("keyd exited before listening (%v):\n%s", err, d.log())
	case <-time.After(60 * time.Second):
		return d, fmt.Errorf("keyd did not listen within 60s:\n%s", d.log())
	}
}

func (d *daemonProc) log() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.logs.String()
}

// stop sends SIGTERM and requires a clean exit.
func (d *daemonProc) stop() {
	d.t.Helper()
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-d.done:
		if err != nil {
			d.t.Fatalf("keyd exited with %v after SIGTERM:\n%s", err, d.log())
		}
	case <-time.After(20 * time.Second):
		d.t.Fatal("keyd did not stop within 20s of SIGTERM")
	}
}

// runKeyd runs keyd to completion and returns its exit code and output.
func runKeyd(t *testing.T, env []string, stdin string, args ...string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, keydBinary, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode(), string(out)
	}
	if err != nil {
		t.Fatal(err)
	}
	return 0, string(out)
}

// recorder keeps every response body the test saw, to check later that no
// secret was ever in one.
type recorder struct {
	mu     sync.Mutex
	bodies []string
}

func (r *recorder) call(t *testing.T, method, url, token, body string) (int, []byte, http.Header) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	r.mu.Lock()
	r.bodies = append(r.bodies, string(data))
	r.mu.Unlock()
	return resp.StatusCode, data, resp.Header
}

const (
	adminToken   = "e2e-admin-token"
	serviceToken = "e2e-service-token"
	narrowToken  = "e2e-narrow-token"
)

func writeConfig(t *testing.T, dir string) string {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "listen: 127.0.0.1:0\nstorage:\n  backend: file\n  file: {path: %q}\nkeysets:\n", filepath.Join(dir, "keyd.db"))
	for _, alg := range keystore.Algorithms {
		fmt.Fprintf(&b, "  - {name: %s, algorithm: %s, rotation: \"@daily\", token_ttl: 10m, jwks_max_age: 1m, leeway: 30s, issuer: \"https://keyd.e2e\"}\n", strings.ToLower(string(alg)), alg)
	}
	fmt.Fprintf(&b, "auth:\n  tokens:\n")
	fmt.Fprintf(&b, "    - {name: ops, sha256: %q, scopes: [admin]}\n", config.TokenHash(adminToken))
	fmt.Fprintf(&b, "    - {name: svc, sha256: %q, scopes: [\"sign:*\", \"verify:*\"]}\n", config.TokenHash(serviceToken))
	fmt.Fprintf(&b, "    - {name: narrow, sha256: %q, scopes: [\"sign:es256\"]}\n", config.TokenHash(narrowToken))
	path := filepath.Join(dir, "keyd.yaml")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

type signed struct {
	keyset, token, kid string
	alg                keystore.Algorithm
}

func TestEndToEnd(t *testing.T) {
	dir := t.TempDir()
	cfgPath := writeConfig(t, dir)
	masterKey, err := file.NewMasterKey()
	if err != nil {
		t.Fatal(err)
	}
	env := []string{"KEYD_MASTER_KEY=" + masterKey}
	rec := &recorder{}

	d := startDaemon(t, env, "--config", cfgPath)

	// A second daemon on the same db file fails fast and says why.
	code, out := runKeyd(t, env, "", "serve", "--config", cfgPath)
	if code == 0 || !strings.Contains(out, "locked by another process") {
		t.Fatalf("second daemon on the same file: exit %d, output:\n%s", code, out)
	}

	var tokens []signed
	for _, alg := range keystore.Algorithms {
		name := strings.ToLower(string(alg))
		status, body, _ := rec.call(t, "POST", d.addr+"/v1/keysets/"+name+"/sign", serviceToken,
			`{"claims": {"sub": "alice", "aud": "billing", "n": 12345678901234567}, "ttl": "5m"}`)
		if status != 200 {
			t.Fatalf("sign %s: %d %s", name, status, body)
		}
		var resp struct {
			Token, KID, Alg string
			ExpiresAt       time.Time `json:"expires_at"`
		}
		if err := json.Unmarshal(body, &resp); err != nil {
			t.Fatal(err)
		}
		if resp.Alg != string(alg) || resp.KID == "" || time.Until(resp.ExpiresAt) > 5*time.Minute+time.Second || time.Until(resp.ExpiresAt) < 4*time.Minute {
			t.Fatalf("sign %s response: %s", name, body)
		}
		tokens = append(tokens, signed{keyset: name, token: resp.Token, kid: resp.KID, alg: alg})
	}

	verifyAll(t, rec, d, tokens)
	checkErrors(t, rec, d)

	// CLI against the running daemon.
	cliEnv := append(env, "KEYD_ADDR="+d.addr, "KEYD_TOKEN="+adminToken)
	if code, out := runKeyd(t, cliEnv, "", "keysets"); code != 0 || !strings.Contains(out, tokens[0].kid) || !strings.Contains(out, "pending") {
		t.Fatalf("keyd keysets: %d\n%s", code, out)
	}
	if code, out := runKeyd(t, cliEnv, "", "rotate", "es256"); code == 0 || !strings.Contains(out, "HTTP 409") || !strings.Contains(out, "--force") {
		t.Fatalf("keyd rotate too early: %d\n%s", code, out)
	}
	svcEnv := append(env, "KEYD_ADDR="+d.addr, "KEYD_TOKEN="+serviceToken)
	code, cliTok := runKeyd(t, svcEnv, `{"sub": "cli"}`, "sign", "--ttl", "1m", "eddsa")
	if code != 0 {
		t.Fatalf("keyd sign: %d %s", code, cliTok)
	}
	if code, out := runKeyd(t, svcEnv, cliTok, "verify", "eddsa"); code != 0 || !strings.Contains(out, `"cli"`) {
		t.Fatalf("keyd verify: %d %s", code, out)
	}

	// Restart: the same keys, old tokens still verify.
	activeBefore := activeKIDs(t, rec, d)
	d.stop()
	d = startDaemon(t, env, "--config", cfgPath)
	if after := activeKIDs(t, rec, d); fmt.Sprint(after) != fmt.Sprint(activeBefore) {
		t.Fatalf("active keys changed across restart:\nbefore %v\nafter  %v", activeBefore, after)
	}
	verifyAll(t, rec, d, tokens)

	// Forced rotation through the CLI: the old pending key signs, the old
	// active key's tokens still verify.
	cliEnv = append(env, "KEYD_ADDR="+d.addr, "KEYD_TOKEN="+adminToken)
	if code, out := runKeyd(t, cliEnv, "", "rotate", "--force", "es256"); code != 0 || !strings.Contains(out, "retired") {
		t.Fatalf("keyd rotate --force: %d\n%s", code, out)
	}
	verifyAll(t, rec, d, tokens)

	// Revoke through the CLI: the key leaves the JWKS at once and its
	// tokens stop verifying.
	var es signed
	for _, s := range tokens {
		if s.alg == keystore.ES384 {
			es = s
		}
	}
	if code, out := runKeyd(t, cliEnv, "", "revoke", "es384", es.kid); code != 0 || !strings.Contains(out, "revoked") {
		t.Fatalf("keyd revoke: %d\n%s", code, out)
	}
	_, body, _ := rec.call(t, "GET", d.addr+"/.well-known/jwks.json", "", "")
	if strings.Contains(string(body), es.kid) {
		t.Fatal("revoked key still in the JWKS")
	}
	_, body, _ = rec.call(t, "POST", d.addr+"/v1/keysets/es384/verify", serviceToken, `{"token": "`+es.token+`"}`)
	if !strings.Contains(string(body), `"valid":false`) {
		t.Fatalf("token of a revoked key: %s", body)
	}
	logs := d.log()
	d.stop()

	noSecretsAnywhere(t, filepath.Join(dir, "keyd.db"), masterKey, append(rec.bodies, logs))
}

// verifyAll checks every token three ways: go-jose with the key from the
// global JWKS, go-jose with the key set's own JWKS, and keyd's verify
// endpoint. HMAC tokens can only use the last.
func verifyAll(t *testing.T, rec *recorder, d *daemonProc, tokens []signed) {
	t.Helper()
	status, body, hdr := rec.call(t, "GET", d.addr+"/.well-known/jwks.json", "", "")
	if status != 200 || hdr.Get("Content-Type") != "application/json" || !strings.HasPrefix(hdr.Get("Cache-Control"), "public, max-age=") {
		t.Fatalf("JWKS: %d %v", status, hdr)
	}
	var all jose.JSONWebKeySet
	if err := json.Unmarshal(body, &all); err != nil {
		t.Fatal(err)
	}
	for _, s := range tokens {
		_, body, _ := rec.call(t, "GET", d.addr+"/v1/keysets/"+s.keyset+"/jwks.json", "", "")
		var own jose.JSONWebKeySet
		if err := json.Unmarshal(body, &own); err != nil {
			t.Fatal(err)
		}
		if s.alg.Symmetric() {
			if len(own.Keys) != 0 || len(all.Key(s.kid)) != 0 {
				t.Fatalf("%s: HMAC key published", s.keyset)
			}
		} else {
			for _, set := range []jose.JSONWebKeySet{all, own} {
				keys := set.Key(s.kid)
				if len(keys) != 1 || !keys[0].IsPublic() {
					t.Fatalf("%s: kid %s not published once as a public key", s.keyset, s.kid)
				}
				parsed, err := josejwt.ParseSigned(s.token, []jose.SignatureAlgorithm{jose.SignatureAlgorithm(s.alg)})
				if err != nil {
					t.Fatal(err)
				}
				var claims josejwt.Claims
				if err := parsed.Claims(keys[0], &claims); err != nil {
					t.Fatalf("%s: go-jose rejects the token: %v", s.keyset, err)
				}
				if err := claims.Validate(josejwt.Expected{Issuer: "https://keyd.e2e", AnyAudience: []string{"billing"}, Time: time.Now()}); err != nil {
					t.Fatalf("%s: claims: %v", s.keyset, err)
				}
			}
		}
		status, body, _ = rec.call(t, "POST", d.addr+"/v1/keysets/"+s.keyset+"/verify", serviceToken, `{"token": "`+s.token+`"}`)
		var v struct {
			Valid  bool
			KID    string
			Claims map[string]any
			Error  string
		}
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.UseNumber()
		if err := dec.Decode(&v); err != nil {
			t.Fatal(err)
		}
		// Large integers survive signing and verifying without going through float64.
		if status != 200 || !v.Valid || v.KID != s.kid || v.Claims["n"] != json.Number("12345678901234567") {
			t.Fatalf("%s: verify endpoint: %d %s", s.keyset, status, body)
		}
	}
}

func activeKIDs(t *testing.T, rec *recorder, d *daemonProc) map[string]string {
	t.Helper()
	status, body, _ := rec.call(t, "GET", d.addr+"/v1/keysets", adminToken, "")
	if status != 200 {
		t.Fatalf("list key sets: %d %s", status, body)
	}
	var out struct {
		KeySets []struct {
			Name string
			Keys []struct{ KID, State string }
		}
	}
	if err := json.Unmarshal(body, &out); err != nil {
		t.Fatal(err)
	}
	active := map[string]string{}
	for _, ks := range out.KeySets {
		for _, k := range ks.Keys {
			if k.State == "active" {
				active[ks.Name] = k.KID
			}
		}
	}
	if len(active) != len(keystore.Algorithms) {
		t.Fatalf("active keys: %v", active)
	}
	return active
}

func checkErrors(t *testing.T, rec *recorder, d *daemonProc) {
	t.Helper()
	sign := d.addr + "/v1/keysets/es256/sign"
	cases := []struct {
		name, method, url, token, body string
		status                         int
		code                           string
	}{
		{"no token", "POST", sign, "", `{"claims": {}}`, 401, "unauthorized"},
		{"unknown token", "POST", sign, "nope", `{"claims": {}}`, 401, "unauthorized"},
		{"missing scope", "POST", d.addr + "/v1/keysets/rs256/sign", narrowToken, `{"claims": {}}`, 403, "forbidden"},
		{"verify without scope", "POST", d.addr + "/v1/keysets/es256/verify", narrowToken, `{"token": "x"}`, 403, "forbidden"},
		{"admin needs admin", "GET", d.addr + "/v1/keysets", serviceToken, "", 403, "forbidden"},
		{"unknown key set", "POST", d.addr + "/v1/keysets/nope/sign", serviceToken, `{"claims": {}}`, 404, "keyset_not_found"},
		{"unknown key set jwks", "GET", d.addr + "/v1/keysets/nope/jwks.json", "", "", 404, "keyset_not_found"},
		{"unknown key set admin", "GET", d.addr + "/v1/keysets/nope", adminToken, "", 404, "keyset_not_found"},
		{"malformed JSON", "POST", sign, serviceToken, `{"claims": `, 400, "bad_json"},
		{"unknown field", "POST", sign, serviceToken, `{"claims": {}, "tll": "5m"}`, 400, "bad_json"},
		{"trailing data", "POST", sign, serviceToken, `{"claims": {}} {}`, 400, "bad_json"},
		{"empty body", "POST", sign, serviceToken, ``, 400, "bad_request"},
		{"claims not an object", "POST", sign, serviceToken, `{"claims": [1]}`, 400, "bad_json"},
		{"ttl over the limit", "POST", sign, serviceToken, `{"claims": {}, "ttl": "11m"}`, 400, "bad_request"},
		{"ttl not a duration", "POST", sign, serviceToken, `{"claims": {}, "ttl": "soon"}`, 400, "bad_request"},
		{"exp beyond the limit", "POST", sign, serviceToken, `{"claims": {"exp": 99999999999}}`, 400, "bad_request"},
		{"oversized body", "POST", sign, serviceToken, `{"claims": {"x": "` + strings.Repeat("a", 1<<20) + `"}}`, 413, "body_too_large"},
		{"rotate too early", "POST", d.addr + "/v1/keysets/es256/rotate", adminToken, ``, 409, "rotation_too_early"},
		{"revoke unknown kid", "POST", d.addr + "/v1/keysets/es256/keys/nope/revoke", adminToken, ``, 404, "key_not_found"},
		{"wrong method", "DELETE", d.addr + "/v1/keysets/es256/sign", serviceToken, ``, 405, "method_not_allowed"},
		{"unknown path", "GET", d.addr + "/v2/nothing", "", ``, 404, "not_found"},
	}
	for _, tc := range cases {
		status, body, _ := rec.call(t, tc.method, tc.url, tc.token, tc.body)
		var e struct {
			Error struct{ Code, Message string }
		}
		if status != tc.status || json.Unmarshal(body, &e) != nil || e.Error.Code != tc.code || e.Error.Message == "" {
			t.Errorf("%s: got %d %s, want %d %s", tc.name, status, truncate(body), tc.status, tc.code)
		}
	}
	// An invalid token is a 200 with valid: false.
	status, body, _ := rec.call(t, "POST", d.addr+"/v1/keysets/hs256/verify", serviceToken, `{"token": "eyJhbGciOiJub25lIn0.e30."}`)
	if status != 200 || !strings.Contains(string(body), `"valid":false`) {
		t.Errorf("alg none token: %d %s", status, body)
	}
	for _, path := range []string{"/healthz", "/readyz"} {
		if status, body, _ := rec.call(t, "GET", d.addr+path, "", ""); status != 200 {
			t.Errorf("%s: %d %s", path, status, body)
		}
	}
	// The daemon is still serving after all that.
	if status, _, _ := rec.call(t, "POST", sign, serviceToken, `{"claims": {}}`); status != 200 {
		t.Fatalf("sign after bad requests: %d", status)
	}
}

func truncate(b []byte) string {
	if len(b) > 200 {
		return string(b[:200]) + "..."
	}
	return string(b)
}

// noSecretsAnywhere opens the stopped daemon's store and checks that no
// key's material, in any common encoding, appears in the texts.
func noSecretsAnywhere(t *testing.T, dbPath, masterKey string, texts []string) {
	t.Helper()
	key, err := file.ParseMasterKey(masterKey)
	if err != nil {
		t.Fatal(err)
	}
	s, err := file.Open(file.Options{Path: dbPath, MasterKey: key})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	sets, err := s.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	joined := strings.Join(texts, "\n")
	checked := 0
	for _, ks := range sets {
		for _, k := range ks.Keys {
			m := []byte(k.Material)
			for _, enc := range []string{string(m), hex.EncodeToString(m), base64.StdEncoding.EncodeToString(m), base64.RawURLEncoding.EncodeToString(m)} {
				if strings.Contains(joined, enc) {
					t.Fatalf("material of %s/%s appears in a response or log line", ks.Name, k.ID)
				}
			}
			checked++
		}
	}
	if checked < 2*len(keystore.Algorithms) {
		t.Fatalf("checked only %d keys", checked)
	}
	if strings.Contains(joined, masterKey) {
		t.Fatal("the master key appears in a response or log line")
	}
}

func activeKID(body []byte) string {
	var ks struct{ Keys []struct{ KID, State string } }
	_ = json.Unmarshal(body, &ks)
	for _, k := range ks.Keys {
		if k.State == "active" {
			return k.KID
		}
	}
	return ""
}

// kubeSigner is a client of keyd's Kubernetes signer listening at socket,
// closed when t ends.
func kubeSigner(t *testing.T, socket string) v1.ExternalJWTSignerClient {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return v1.NewExternalJWTSignerClient(conn)
}
