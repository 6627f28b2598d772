package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	neturl "net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyd-dev/keyd/backends/file"
	"github.com/keyd-dev/keyd/internal/config"
)

// TestExamples runs each worked service of examples/ against a real keyd
// and calls its protected route with a valid token, one for another
// audience, an expired one and a revoked one; the Flask and FastAPI
// services also log in through keyd and refresh.
func TestExamples(t *testing.T) {
	dir := t.TempDir()
	cfg := fmt.Sprintf(`listen: 127.0.0.1:0
storage: {backend: file, file: {path: %q}}
keysets:
  - {name: app, algorithm: ES256, rotation: "@daily", token_ttl: 10m, jwks_max_age: 1s, leeway: 0s,
     issuer: "https://keyd.example", refresh: {ttl: 1h}}
auth:
  tokens:
    - {name: ops, sha256: %q, scopes: [admin]}
    - {name: svc, sha256: %q, scopes: ["sign:app", "verify:app"]}
`, filepath.Join(dir, "keyd.db"), config.TokenHash(adminToken), config.TokenHash(serviceToken))
	cfgPath := filepath.Join(dir, "keyd.yaml")
	writeFile(t, cfgPath, []byte(cfg))
	masterKey, _ := file.NewMasterKey()
	d := startDaemon(t, []string{"KEYD_MASTER_KEY=" + masterKey}, "--config", cfgPath)

	goBin := filepath.Join(dir, "example-go")
	if out, err := exec.Command("go", "build", "-o", goBin, "../../examples/go").CombinedOutput(); err != nil {
		t.Fatalf("building examples/go: %v\n%s", err, out)
	}
	examples := []struct {
		name   string
		cmd    []string
		dir    string
		login  bool
		needed func() error
	}{
		{"go", []string{goBin}, ".", false, func() error { return nil }},
		{"flask", []string{"/usr/bin/python3", "flask_app.py"}, "../../examples/python", true, pythonHas("flask", "jwt")},
		{"fastapi", []string{"/usr/bin/python3", "fastapi_app.py"}, "../../examples/python", true, pythonHas("fastapi", "uvicorn", "jwt")},
		{"node", []string{"node", "server.mjs"}, "../../examples/node", false, nodeHasJose},
	}
	for _, ex := range examples {
		t.Run(ex.name, func(t *testing.T) {
			if err := ex.needed(); err != nil {
				if os.Getenv("KEYD_REQUIRE_EXAMPLES") != "" {
					t.Fatalf("%s example cannot run: %v", ex.name, err)
				}
				t.Skipf("%s example cannot run here: %v", ex.name, err)
			}
			front := newListProxy(t, d.addr)
			url := startExample(t, ex.cmd, ex.dir, front.URL)
			exerciseExample(t, d, url, ex.login, front)
		})
	}
}

func pythonHas(modules ...string) func() error {
	return func() error {
		return exec.Command("/usr/bin/python3", "-c", "import "+strings.Join(modules, ", ")).Run()
	}
}

func nodeHasJose() error {
	if _, err := exec.LookPath("node"); err != nil {
		return err
	}
	_, err := os.Stat("../../examples/node/node_modules/jose")
	return err
}

// startExample runs an example service on a free port and waits until it
// answers.
func startExample(t *testing.T, argv []string, dir, keyd string, env ...string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	_, port, _ := net.SplitHostPort(addr)
	arg := port
	if argv[0] != "/usr/bin/python3" && argv[0] != "node" {
		arg = addr
	}
	cmd := exec.Command(argv[0], append(argv[1:], arg)...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "KEYD_URL="+keyd, "KEYD_KEYSET=app", "KEYD_ALG=ES256", "KEYD_TOKEN="+serviceToken,
		"APP_AUDIENCE=billing", "APP_ISSUER=https://keyd.example")
	cmd.Env = append(cmd.Env, env...) // the last value of a name wins
	logs := &lockedLog{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	url := "http://" + addr
	deadline := time.Now().Add(30 * time.Second)
	for {
		// Answering, and (the Go and Node examples) saying where.
		says := argv[0] != "node" && !strings.HasSuffix(argv[0], "example-go") || strings.Contains(logs.String(), "listening on "+url)
		if resp, err := http.Get(url + "/api/me"); err == nil {
			resp.Body.Close()
			if says {
				return url
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the example did not answer:\n%s", logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// listProxy stands between an example and keyd, as a proxy or a CDN
// would. capture takes keyd's whole revocation list as it stands and from
// then on tells the example the lists it passes on are stale at once
// (max-age=0: the example fetches at its next request); replay answers
// every revocation list request with the captured list, as a CDN that
// ignores ?since= would, once the example holds a newer one.
type listProxy struct {
	URL      string
	keyd     string
	captured atomic.Pointer[[]byte]
	replayed atomic.Bool
}

func newListProxy(t *testing.T, keyd string) *listProxy {
	p := &listProxy{keyd: keyd}
	target, _ := neturl.Parse(keyd)
	proxy := httputil.NewSingleHostReverseProxy(target)
	proxy.ModifyResponse = func(resp *http.Response) error {
		if !strings.HasSuffix(resp.Request.URL.Path, "/revocations.jwt") || p.captured.Load() == nil {
			return nil
		}
		resp.Header.Set("Cache-Control", "max-age=0")
		if !p.replayed.Load() {
			return nil
		}
		body := *p.captured.Load()
		resp.Body = io.NopCloser(bytes.NewReader(body))
		resp.ContentLength = int64(len(body))
		resp.Header.Set("Content-Length", strconv.Itoa(len(body)))
		return nil
	}
	srv := httptest.NewServer(proxy)
	t.Cleanup(srv.Close)
	p.URL = srv.URL
	return p
}

func (p *listProxy) capture(t *testing.T) {
	t.Helper()
	resp, err := http.Get(p.keyd + "/v1/keysets/app/revocations.jwt")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	p.captured.Store(&body)
}

func exerciseExample(t *testing.T, d *daemonProc, url string, login bool, front *listProxy) {
	rec := &recorder{}
	sign := func(claims, ttl string) string {
		t.Helper()
		status, body, _ := rec.call(t, "POST", d.addr+"/v1/keysets/app/sign", serviceToken, `{"claims":`+claims+`,"ttl":"`+ttl+`"}`)
		var out struct{ Token string }
		if status != 200 || json.Unmarshal(body, &out) != nil {
			t.Fatalf("sign: %d %s", status, body)
		}
		return out.Token
	}
	call := func(method, path, token, body string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(method, url+path, strings.NewReader(body))
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		if body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	expect := func(what, token string, status int, contains string) {
		t.Helper()
		code, body := call("GET", "/api/me", token, "")
		if code != status || !strings.Contains(body, contains) {
			t.Errorf("%s: %d %s, want %d with %q", what, code, body, status, contains)
		}
	}
	valid := sign(`{"sub":"alice","aud":"billing"}`, "5m")
	expect("valid token", valid, 200, "alice")
	expect("no token", "", 401, "missing_token")
	expect("another audience", sign(`{"sub":"alice","aud":"ledger"}`, "5m"), 401, "invalid_audience")
	short := sign(`{"sub":"alice","aud":"billing"}`, "1s")
	revoked := sign(`{"sub":"mallory","aud":"billing"}`, "5m")
	expect("before its revocation", revoked, 200, "mallory")
	loggedOut := sign(`{"sub":"dave","aud":"billing"}`, "5m")
	expect("before its subject's revocation", loggedOut, 200, "dave")
	for _, body := range []string{`{"token":"` + revoked + `"}`, `{"sub":"dave"}`} {
		if status, out, _ := rec.call(t, "POST", d.addr+"/v1/keysets/app/revocations", adminToken, body); status != 200 {
			t.Fatalf("revoke: %d %s", status, out)
		}
	}
	time.Sleep(2100 * time.Millisecond) // the 1s token expires; the 1s revocation list goes stale
	expect("expired token", short, 401, "token_expired")
	expect("revoked token", revoked, 401, "token_revoked")
	expect("a token of a revoked subject", loggedOut, 401, "token_revoked")
	expect("the valid token still", valid, 200, "alice")
	// A list from before a revocation, replayed once the example holds a
	// newer one (within the older list's exp): refused, the list held
	// stays, and the revoked token with it.
	oscar := sign(`{"sub":"oscar","aud":"billing"}`, "5m")
	front.capture(t)
	if status, out, _ := rec.call(t, "POST", d.addr+"/v1/keysets/app/revocations", adminToken, `{"token":"`+oscar+`"}`); status != 200 {
		t.Fatalf("revoke: %d %s", status, out)
	}
	time.Sleep(1050 * time.Millisecond) // keyd signs the change in; the Go verifier polls
	expect("a token revoked after the capture", oscar, 401, "token_revoked")
	front.replayed.Store(true)
	expect("a revoked token once an older list is replayed", oscar, 401, "token_revoked")
	if !login {
		return
	}
	status, body := call("POST", "/login", "", `{"user":"carol"}`)
	var pair struct {
		AccessToken  string `json:"access_token"`
		RefreshToken string `json:"refresh_token"`
	}
	if status != 200 || json.Unmarshal([]byte(body), &pair) != nil || pair.RefreshToken == "" {
		t.Fatalf("login: %d %s", status, body)
	}
	expect("the login's access token", pair.AccessToken, 200, "carol")
	status, body = call("POST", "/refresh", "", `{"refresh_token":"`+pair.RefreshToken+`"}`)
	var next struct {
		AccessToken string `json:"access_token"`
	}
	if status != 200 || json.Unmarshal([]byte(body), &next) != nil {
		t.Fatalf("refresh: %d %s", status, body)
	}
	expect("the refreshed access token", next.AccessToken, 200, "carol")
	if status, body := call("POST", "/refresh", "", `{"refresh_token":"`+pair.RefreshToken+`"}`); status != 401 || !strings.Contains(body, "refresh_token_reused") {
		t.Errorf("refreshing twice: %d %s", status, body)
	}
}

// lockedLog collects a process's output, written from exec's goroutines.
type lockedLog struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
