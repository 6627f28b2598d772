// Package testredis starts a real redis-server (Debian's package) for
// tests, on a free loopback port, with persistence off, and can stop and
// restart it on the same port to simulate an outage. It is internal
// because only keyd's tests use it.
package testredis

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
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
	if !listens(s.Addr) {
		return fmt.Errorf("redis-server did not listen on %s:\n%s", s.Addr, s.out.String())
	}
	return nil
}

// listens polls addr until a process we started accepts connections
// there (at most 20 s), and says whether it did.
func listens(addr string) bool {
	deadline := time.Now().Add(20 * time.Second)
	for {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond) // polling a process we started, not waiting for time
	}
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

// Freeze stops the server's process (SIGSTOP): connections stay open and
// nothing answers, as a Redis stalled by a fork, swap or a long command.
func (s *Server) Freeze() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cmd.Process.Signal(syscall.SIGSTOP)
}

// Thaw resumes a frozen server (SIGCONT).
func (s *Server) Thaw() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cmd.Process.Signal(syscall.SIGCONT)
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
	if !listens(addr) {
		t.Fatalf("redis sentinel did not listen on %s:\n%s", addr, out.String())
	}
	return addr
}

// StartCluster starts a Redis Cluster of three masters (no replicas) made
// with redis-cli --cluster create, waits until every slot is served, and
// returns the url keyd takes for it (redis://node1?addr=node2&addr=node3).
func StartCluster(t testing.TB) string {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	cli, err2 := exec.LookPath("redis-cli")
	if err != nil || err2 != nil {
		msg := "no redis-server and redis-cli (apt-get install redis-server)"
		if os.Getenv(EnvRequire) != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	var addrs []string
	for range 3 {
		port := clusterPort(t)
		dir := t.TempDir()
		var out bytes.Buffer
		cmd := exec.Command(bin, "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir,
			"--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "2000")
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		if !listens(addr) {
			t.Fatalf("cluster node did not listen on %s:\n%s", addr, out.String())
		}
		addrs = append(addrs, addr)
	}
	args := append(append([]string{"--cluster", "create"}, addrs...), "--cluster-replicas", "0", "--cluster-yes")
	if out, err := exec.Command(cli, args...).CombinedOutput(); err != nil {
		t.Fatalf("redis-cli --cluster create: %v\n%s", err, out)
	}
	host, port, _ := net.SplitHostPort(addrs[0])
	deadline := time.Now().Add(30 * time.Second)
	for {
		out, _ := exec.Command(cli, "-h", host, "-p", port, "cluster", "info").Output()
		if bytes.Contains(out, []byte("cluster_state:ok")) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the cluster is not ok after 30 s:\n%s", out)
		}
		time.Sleep(50 * time.Millisecond) // polling the cluster's own state
	}
	return "redis://" + addrs[0] + "?addr=" + addrs[1] + "&addr=" + addrs[2]
}

// clusterPort finds a free port whose cluster bus port (port + 10000) is
// free too.
func clusterPort(t testing.TB) int {
	t.Helper()
	for range 100 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := ln.Addr().(*net.TCPAddr).Port
		ln.Close()
		if port+10000 > 65535 {
			continue
		}
		if bus, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port+10000)); err == nil {
			bus.Close()
			return port
		}
	}
	t.Fatal("no free port with a free cluster bus port")
	return 0
}

// Calls is how many times the server has run command (lower case, as
// INFO commandstats names it: "scan"), read over a connection of its own.
func (s *Server) Calls(t testing.TB, command string) int64 {
	t.Helper()
	c, err := net.DialTimeout("tcp", s.Addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte("INFO commandstats\r\n")); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(c)
	head, err := r.ReadString('\n') // $LEN
	if err != nil || !strings.HasPrefix(head, "$") {
		t.Fatalf("INFO commandstats: %q %v", head, err)
	}
	n, _ := strconv.Atoi(strings.TrimSpace(head[1:]))
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(body), "\r\n") {
		if rest, ok := strings.CutPrefix(line, "cmdstat_"+command+":calls="); ok {
			calls, _ := strconv.ParseInt(rest[:strings.IndexByte(rest, ',')], 10, 64)
			return calls
		}
	}
	return 0
}
