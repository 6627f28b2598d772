// Package testredis starts a real redis-server (Debian's package) for
// tests, on a free loopback port, with persistence off, and can stop and
// restart it on the same port to simulate an outage. It is internal
// because only keyd's tests use it.
package testredis

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"testing"
	"time"
)

// EnvRequire, when set, makes a missing redis-server a failure instead of
// a skip (scripts/test.sh sets it, and scripts/deps.sh installs it).
const EnvRequire = "KEYD_REQUIRE_REDIS"

// Server is a running redis-server.
type Server struct {
	Addr string // 127.0.0.1:PORT
	URL  string // redis://127.0.0.1:PORT/0
	bin  string
	port int
	dir  string
	mu   sync.Mutex
	cmd  *exec.Cmd
	out  bytes.Buffer
}

// Start starts a server for t and stops it when t ends. Without
// redis-server it skips t (or fails it when KEYD_REQUIRE_REDIS is set).
func Start(t testing.TB) *Server {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		msg := "no redis-server (apt-get install redis-server, or run ./scripts/test.sh)"
		if os.Getenv(EnvRequire) != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	s := &Server{Addr: fmt.Sprintf("127.0.0.1:%d", port), URL: fmt.Sprintf("redis://127.0.0.1:%d/0", port), bin: bin, port: port, dir: t.TempDir()}
	if err := s.Restart(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	return s
}

// Restart starts the server again (after Stop) on the same port; the data
// is gone (persistence is off).
func (s *Server) Restart() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cmd = exec.Command(s.bin, "--port", strconv.Itoa(s.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", s.dir)
	s.cmd.Stdout, s.cmd.Stderr = &s.out, &s.out
	if err := s.cmd.Start(); err != nil {
		return err
	}
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := net.Dial("tcp", s.Addr); err == nil {
			c.Close()
			return nil
		}
		time.Sleep(20 * time.Millisecond) // polling a process we started, not waiting for time
	}
	return fmt.Errorf("redis-server did not listen on %s:\n%s", s.Addr, s.out.String())
}

// Stop stops the server (a cut connection for its clients).
func (s *Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil && s.cmd.Process != nil {
		_ = s.cmd.Process.Kill()
		_ = s.cmd.Wait()
		s.cmd = nil
	}
}

// StartSentinel starts a redis-server in sentinel mode watching master
// (under the name "keyd") and returns its address.
func StartSentinel(t testing.TB, master *Server) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	dir := t.TempDir()
	conf := dir + "/sentinel.conf"
	body := fmt.Sprintf("port %d\nbind 127.0.0.1\ndir %s\nsentinel monitor keyd 127.0.0.1 %d 1\n", port, dir, master.port)
	if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	cmd := exec.Command(master.bin, conf, "--sentinel")
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return addr
		}
		time.Sleep(20 * time.Millisecond) // polling a process we started
	}
	t.Fatalf("redis sentinel did not listen on %s:\n%s", addr, out.String())
	return ""
}
