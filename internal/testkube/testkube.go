// Package testkube starts a real Kubernetes API server for tests: etcd
// (Debian's etcd-server) and kube-apiserver of scripts/dev-kube.sh, each
// on free loopback ports in a temporary folder, stopped when the test
// ends. Tests use it to run keyd as the cluster's external service account
// signer and to dry-run the Helm chart's objects against the API server's
// own validation and admission (Pod Security included).
package testkube

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keyd-dev/keyd/internal/testnet"
)

// Version is the Kubernetes release scripts/dev-kube.sh builds.
const Version = "1.37.2"

// Issuer is the service account issuer the API server runs with.
const Issuer = "https://kubernetes.default.svc"

// Options says how to run the API server.
type Options struct {
	// SigningEndpoint is keyd's socket: service account tokens are signed
	// and their keys fetched through it.
	SigningEndpoint string
	// KeyFile signs and verifies service account tokens (sa.key) when
	// there is no SigningEndpoint; empty: a P-256 key of the test's.
	KeyFile string
}

// Server is a running API server.
type Server struct {
	URL        string // https://127.0.0.1:PORT
	Token      string // a bearer token in group system:masters
	Kubeconfig string // for kubectl
	kubectl    string
	client     *http.Client
	dir, bin   string
	etcdURL    string
	port       int
	stop       func() // stops the running kube-apiserver
}

// Binaries returns the folder holding kube-apiserver and kubectl, and
// etcd's path; it skips the test when they are missing (fails where
// KEYD_REQUIRE_KUBE is set, as in scripts/test.sh).
func Binaries(t testing.TB) (dir, etcd string) {
	t.Helper()
	dir = os.Getenv("KEYD_TEST_KUBE_DIR")
	if dir == "" {
		cache := os.Getenv("XDG_CACHE_HOME")
		if cache == "" {
			home, _ := os.UserHomeDir()
			cache = filepath.Join(home, ".cache")
		}
		dir = filepath.Join(cache, "keyd", "kubernetes-"+Version)
	}
	etcd, err := exec.LookPath("etcd")
	_, err2 := os.Stat(filepath.Join(dir, "kube-apiserver"))
	if err != nil || err2 != nil {
		msg := fmt.Sprintf("a real API server is needed: scripts/dev-kube.sh build (kube-apiserver in %s) and etcd (apt-get install etcd-server)", dir)
		if os.Getenv("KEYD_REQUIRE_KUBE") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return dir, etcd
}

// Start runs etcd and kube-apiserver and waits until the API server is
// ready.
func Start(t testing.TB, o Options) *Server {
	t.Helper()
	bin, etcd := Binaries(t)
	dir := t.TempDir()
	ports := testnet.FreePorts(t, 3)
	etcdURL := fmt.Sprintf("http://127.0.0.1:%d", ports[0])
	peerURL := fmt.Sprintf("http://127.0.0.1:%d", ports[1])
	_, _, _ = run(t, dir, "etcd", etcd, "--data-dir", filepath.Join(dir, "etcd"), "--name", "keyd-test",
		"--listen-client-urls", etcdURL, "--advertise-client-urls", etcdURL,
		"--listen-peer-urls", peerURL, "--initial-advertise-peer-urls", peerURL,
		"--initial-cluster", "keyd-test="+peerURL, "--log-level", "warn")

	s := &Server{URL: fmt.Sprintf("https://127.0.0.1:%d", ports[2]), Token: "keyd-test-admin-" + fmt.Sprint(time.Now().UnixNano()),
		kubectl: filepath.Join(bin, "kubectl"), dir: dir, bin: bin, etcdURL: etcdURL, port: ports[2],
		client: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
			TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, // the API server's own self-signed certificate, on loopback
		}}}
	write(t, filepath.Join(dir, "tokens.csv"), s.Token+`,admin,admin,"system:masters"`+"\n")
	s.Kubeconfig = filepath.Join(dir, "kubeconfig")
	write(t, s.Kubeconfig, fmt.Sprintf(`apiVersion: v1
kind: Config
clusters: [{name: test, cluster: {server: %q, insecure-skip-tls-verify: true}}]
users: [{name: admin, user: {token: %q}}]
contexts: [{name: test, context: {cluster: test, user: admin}}]
current-context: test
`, s.URL, s.Token))
	s.Restart(t, o)
	return s
}

// Restart stops the API server, if running, and starts it again with o on
// the same etcd (the cluster's objects stay), as an operator switching its
// flags does; it waits until the server is ready.
func (s *Server) Restart(t testing.TB, o Options) {
	t.Helper()
	if s.stop != nil {
		s.stop()
	}
	args := []string{
		"--etcd-servers=" + s.etcdURL,
		fmt.Sprintf("--secure-port=%d", s.port), "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
		"--endpoint-reconciler-type=none", // no Endpoints for a loopback address
		"--cert-dir=" + filepath.Join(s.dir, "certs"),
		"--token-auth-file=" + filepath.Join(s.dir, "tokens.csv"),
		"--authorization-mode=RBAC",
		"--service-account-issuer=" + Issuer, "--api-audiences=" + Issuer,
		"--service-cluster-ip-range=10.0.0.0/24",
	}
	switch {
	case o.SigningEndpoint != "":
		args = append(args, "--service-account-signing-endpoint="+o.SigningEndpoint)
	case o.KeyFile != "":
		args = append(args, "--service-account-key-file="+o.KeyFile, "--service-account-signing-key-file="+o.KeyFile)
	default:
		key := filepath.Join(s.dir, "sa.key")
		if _, err := os.Stat(key); err != nil {
			if out, err := exec.Command("openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", key).CombinedOutput(); err != nil {
				t.Fatalf("openssl genpkey: %v\n%s", err, out)
			}
		}
		args = append(args, "--service-account-key-file="+key, "--service-account-signing-key-file="+key)
	}
	var log string
	var exited <-chan struct{}
	log, s.stop, exited = run(t, s.dir, "kube-apiserver", filepath.Join(s.bin, "kube-apiserver"), args...)
	deadline := time.Now().Add(90 * time.Second)
	for {
		status, body := s.Do(t, "GET", "/readyz", nil)
		if status == 200 && string(body) == "ok" {
			return
		}
		select {
		case <-exited:
			t.Fatalf("kube-apiserver exited; its log:\n%s", tail(log, 40))
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("kube-apiserver not ready after 90s (%d %s); its log:\n%s", status, body, tail(log, 40))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// CACert is the PEM of the API server's own serving certificate (made at
// its first start), for clients that check it, as Vault's Kubernetes auth
// does.
func (s *Server) CACert(t testing.TB) []byte {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(s.dir, "certs", "apiserver.crt"))
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// ServiceAccountToken makes the service account name in namespace (and the
// namespace, if new) and returns a token of it for audience, from the
// TokenRequest API, as the kubelet projects one into a pod.
func (s *Server) ServiceAccountToken(t testing.TB, namespace, name, audience string) string {
	t.Helper()
	if status, body := s.Do(t, "POST", "/api/v1/namespaces", map[string]any{"metadata": map[string]any{"name": namespace}}); status != 201 && status != 409 {
		t.Fatalf("namespace %s: %d %s", namespace, status, body)
	}
	if status, body := s.Do(t, "POST", "/api/v1/namespaces/"+namespace+"/serviceaccounts", map[string]any{"metadata": map[string]any{"name": name}}); status != 201 && status != 409 {
		t.Fatalf("service account %s/%s: %d %s", namespace, name, status, body)
	}
	status, body := s.Do(t, "POST", "/api/v1/namespaces/"+namespace+"/serviceaccounts/"+name+"/token",
		map[string]any{"spec": map[string]any{"audiences": []string{audience}, "expirationSeconds": 3600}})
	var tr struct {
		Status struct{ Token string } `json:"status"`
	}
	if status != 201 || json.Unmarshal(body, &tr) != nil || tr.Status.Token == "" {
		t.Fatalf("TokenRequest for %s/%s: %d %s", namespace, name, status, body)
	}
	return tr.Status.Token
}

// Do calls the API server as a cluster admin; body, when not nil, is sent
// as JSON. It returns the status and body; a request that fails to reach
// the server answers 0.
func (s *Server) Do(t testing.TB, method, path string, body any) (int, []byte) {
	t.Helper()
	var r io.Reader
	if body != nil {
		raw, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		r = bytes.NewReader(raw)
	}
	req, err := http.NewRequest(method, s.URL+path, r)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+s.Token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := s.client.Do(req)
	if err != nil {
		return 0, []byte(err.Error())
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, out
}

// Kubectl runs kubectl against the server with stdin; it returns what it
// printed (stdout and stderr) and its error.
func (s *Server) Kubectl(t testing.TB, stdin string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(s.kubectl, append([]string{"--kubeconfig", s.Kubeconfig}, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// run starts a server process logging to dir/name.log (appending), and
// returns the log's path, a function that stops it and a channel closed
// when it exits; it is stopped (and its log shown if the test failed) when
// the test ends.
func run(t testing.TB, dir, name, bin string, args ...string) (string, func(), <-chan struct{}) {
	t.Helper()
	log := filepath.Join(dir, name+".log")
	f, err := os.OpenFile(log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			_ = cmd.Process.Kill()
			<-exited
			_ = f.Close()
		})
	}
	t.Cleanup(func() {
		stop()
		if t.Failed() {
			t.Logf("%s log (last lines):\n%s", name, tail(log, 30))
		}
	})
	return log, stop, exited
}

func tail(path string, n int) string {
	raw, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimRight(string(raw), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

func write(t testing.TB, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}
