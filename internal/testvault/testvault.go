// Package testvault starts a real Vault-API server (OpenBao in dev mode) for
// tests, on a free loopback port, and can freeze and thaw it to simulate an
// outage. The server binary comes from KEYD_TEST_BAO, which
// scripts/test.sh sets after scripts/dev-vault.sh builds it. It is internal
// because only keyd's tests use it.
package testvault

import (
	"bytes"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	vaultapi "github.com/hashicorp/vault/api"
)

// EnvBinary names the variable holding the OpenBao binary's path;
// EnvRequire, when set, makes a missing binary a failure instead of a skip
// (CI sets it so that Vault tests can never silently not run).
const (
	EnvBinary  = "KEYD_TEST_BAO"
	EnvRequire = "KEYD_REQUIRE_VAULT"
)

// RootToken is the dev server's root token.
const RootToken = "root"

// Server is a running dev-mode server.
type Server struct {
	Addr string // http://127.0.0.1:PORT
	cmd  *exec.Cmd
	mu   sync.Mutex
	out  bytes.Buffer
}

// RootClient is a client of the server with the root token, for tests to
// set it up and look at it; configure (optional) adjusts its config
// first (a transport that counts requests).
func (s *Server) RootClient(t testing.TB, configure ...func(*vaultapi.Config)) *vaultapi.Client {
	t.Helper()
	cfg := vaultapi.DefaultConfig()
	cfg.Address = s.Addr
	for _, f := range configure {
		f(cfg)
	}
	c, err := vaultapi.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	c.SetToken(RootToken)
	return c
}

// Start starts a server for t and stops it when t ends. Without a binary it
// skips t (or fails it when KEYD_REQUIRE_VAULT is set).
func Start(t testing.TB) *Server {
	t.Helper()
	bin := os.Getenv(EnvBinary)
	if bin == "" {
		msg := "no Vault-API server: run ./scripts/test.sh, or set " + EnvBinary + " to the path `scripts/dev-vault.sh build` prints"
		if os.Getenv(EnvRequire) != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	port := freePortPair(t)
	s := &Server{Addr: "http://127.0.0.1:" + strconv.Itoa(port)}
	s.cmd = exec.Command(bin, "server", "-dev", "-dev-root-token-id="+RootToken, "-dev-no-store-token",
		"-dev-listen-address=127.0.0.1:"+strconv.Itoa(port))
	s.cmd.Stdout = &lockedWriter{s}
	s.cmd.Stderr = &lockedWriter{s}
	if err := s.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	t.Cleanup(s.stop)
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get(s.Addr + "/v1/sys/health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return s
			}
		}
		time.Sleep(50 * time.Millisecond) // polling a process we started, not waiting for time
	}
	t.Fatalf("OpenBao did not become healthy on %s:\n%s", s.Addr, s.output())
	return nil
}

type lockedWriter struct{ s *Server }

func (w *lockedWriter) Write(p []byte) (int, error) {
	w.s.mu.Lock()
	defer w.s.mu.Unlock()
	return w.s.out.Write(p)
}

func (s *Server) output() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.out.String()
}

// Freeze stops the server process (SIGSTOP): connections hang, as in a
// network outage, and nothing is lost. It returns once the kernel reports
// the process stopped, since a signal takes effect a moment after kill.
func (s *Server) Freeze() error {
	if err := s.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		return err
	}
	stat := fmt.Sprintf("/proc/%d/stat", s.cmd.Process.Pid)
	for range 200 {
		b, err := os.ReadFile(stat)
		if err != nil {
			return err
		}
		// The state follows the parenthesised command name: "pid (bao) T ...".
		if i := bytes.LastIndexByte(b, ')'); i > 0 && i+2 < len(b) && b[i+2] == 'T' {
			return nil
		}
		time.Sleep(10 * time.Millisecond) // watching another process's state
	}
	return fmt.Errorf("server pid %d did not stop", s.cmd.Process.Pid)
}

// Thaw resumes a frozen server.
func (s *Server) Thaw() error { return s.cmd.Process.Signal(syscall.SIGCONT) }

func (s *Server) stop() {
	_ = s.Thaw()
	_ = s.cmd.Process.Kill()
	_ = s.cmd.Wait()
}

// freePortPair finds a port p such that p and p+1 are free: dev mode binds
// the next port for cluster traffic.
func freePortPair(t testing.TB) int {
	t.Helper()
	for range 50 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		l2, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port+1))
		l.Close()
		if err == nil {
			l2.Close()
			return port
		}
	}
	t.Fatal(fmt.Errorf("no free pair of loopback ports"))
	return 0
}
