// Package testblob starts the object stores keyd's publishing tests write
// to, each a real server in a process of its own on loopback: SeaweedFS
// (the S3 API), fake-gcs-server (Google Cloud Storage's JSON API) and
// Azurite (Microsoft's Azure Blob Storage emulator). scripts/dev-blob.sh
// builds or installs them into one folder (KEYD_TEST_BLOB_DIR). Without
// them a test is skipped, or fails where KEYD_REQUIRE_BLOB is set. It is
// internal because only keyd's tests use it.
package testblob

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Env names the folder holding weed, fake-gcs-server and azurite-blob.
const (
	EnvDir     = "KEYD_TEST_BLOB_DIR"
	EnvRequire = "KEYD_REQUIRE_BLOB"
)

// Server is a running store with one bucket (a container, for Azure).
type Server struct {
	Scheme string // s3, gs or azblob
	Bucket string
	// URL is keyd's publish[].to of the bucket, with the prefix "site".
	URL string
	// Public is where anyone reads what is under that prefix over plain
	// HTTP (the bucket allows anonymous reads), as a verifier would.
	Public string
	// Env is what keyd's process needs to write: credentials, the
	// emulator's address.
	Env []string

	cmd    *exec.Cmd
	out    *lockedBuffer
	exited chan struct{} // closed when the process ends
}

// binary is the path of name in the emulators' folder, or a skip (a
// failure under KEYD_REQUIRE_BLOB).
func binary(t testing.TB, name string) string {
	t.Helper()
	dir := os.Getenv(EnvDir)
	path := filepath.Join(dir, name)
	if _, err := os.Stat(path); dir == "" || err != nil {
		msg := fmt.Sprintf("no %s: set %s to the folder scripts/dev-blob.sh build prints", name, EnvDir)
		if os.Getenv(EnvRequire) != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return path
}

// start runs the server and waits until ready answers true.
func (s *Server) start(t testing.TB, ready func() bool) {
	t.Helper()
	s.out = &lockedBuffer{}
	s.cmd.Stdout, s.cmd.Stderr = s.out, s.out
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s.exited = make(chan struct{})
	go func() { _ = s.cmd.Wait(); close(s.exited) }()
	t.Cleanup(s.Stop)
	deadline := time.Now().Add(90 * time.Second)
	for !ready() {
		select {
		case <-s.exited:
			t.Fatalf("%s exited:\n%s", s.cmd.Path, s.out.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not answer within 90 s:\n%s", s.cmd.Path, s.out.String())
		}
		time.Sleep(100 * time.Millisecond) // polling a process we started
	}
}

// Stop kills the server (and its children).
func (s *Server) Stop() {
	_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
	<-s.exited
}

// Freeze stops the server's processes (SIGSTOP): connections hang, as
// with a store that stopped answering; Thaw resumes them.
func (s *Server) Freeze() error { return syscall.Kill(-s.cmd.Process.Pid, syscall.SIGSTOP) }

// Thaw resumes a frozen server.
func (s *Server) Thaw() error { return syscall.Kill(-s.cmd.Process.Pid, syscall.SIGCONT) }

// Get reads path (under Public) anonymously over HTTP: the body, the
// status and the headers.
func (s *Server) Get(t testing.TB, path string) ([]byte, int, http.Header) {
	t.Helper()
	resp, err := http.Get(s.Public + "/" + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return body, resp.StatusCode, resp.Header
}

// answers reports whether url answers HTTP at all (any status).
func answers(url string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return true
}

func port(p int) string { return strconv.Itoa(p) }

type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
