package main

// Processes: keyd, the bare baseline server, their CPU time and memory from /proc.

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

type proc struct {
	cmd  *exec.Cmd
	addr string
	// timeouts is the bare server's second address, whose http.Server
	// has keyd's timeouts (the same handlers).
	timeouts string
}

func (p *proc) stop() {
	if p.cmd.ProcessState == nil {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = p.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = p.cmd.Process.Kill()
		}
	}
}

// cpu is the process's user + system CPU time so far, from /proc.
func (p *proc) cpu() time.Duration {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	fields := strings.Fields(string(raw[bytes.LastIndexByte(raw, ')')+2:]))
	utime, _ := strconv.ParseInt(fields[11], 10, 64)
	stime, _ := strconv.ParseInt(fields[12], 10, 64)
	return time.Duration(utime+stime) * time.Second / 100 // USER_HZ
}

// machineIdle is the idle time of all CPUs so far, from /proc/stat.
func machineIdle() time.Duration {
	raw, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(raw), "\n")
	fields := strings.Fields(line) // cpu user nice system idle iowait ...
	if len(fields) < 6 {
		return 0
	}
	idle, _ := strconv.ParseInt(fields[4], 10, 64)
	iowait, _ := strconv.ParseInt(fields[5], 10, 64)
	return time.Duration(idle+iowait) * time.Second / 100 // USER_HZ
}

func (p *proc) rss() int64 { return p.status("VmRSS:") }

// rssAnon is the resident memory of the process's own (anonymous) pages:
// RSS less the file pages it maps (bbolt maps its database file; those
// pages are the kernel's page cache, dropped under memory pressure).
func (p *proc) rssAnon() int64 { return p.status("RssAnon:") }

func (p *proc) status(field string) int64 {
	raw, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	for _, line := range strings.Split(string(raw), "\n") {
		if rest, ok := strings.CutPrefix(line, field); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// startKeyd runs keyd with cfg and waits until it is ready.
func startKeyd(dir, cfg string) (*proc, error) { return startKeydEnv(dir, cfg, nil) }

// startKeydEnv is startKeyd with more environment.
func startKeydEnv(dir, cfg string, env []string) (*proc, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	path := filepath.Join(dir, "keyd.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		return nil, err
	}
	cmd := exec.Command(*keydBin, "serve", "--config", path, "--log-format", "json", "--log-level", "info")
	cmd.Env = append(append(os.Environ(), "KEYD_MASTER_KEY="+masterKey), env...)
	p, err := startProc(cmd, "keyd listening")
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		resp, err := http.Get(p.addr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return p, nil
			}
		}
		if time.Now().After(deadline) {
			p.stop()
			return nil, errors.New("keyd did not become ready")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// startProc starts cmd and reads its JSON log until the line with msg and
// an addr.
func startProc(cmd *exec.Cmd, msg string) (*proc, error) {
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", cmd.Path, err)
	}
	addr := make(chan [2]string, 1)
	exited := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		last := ""
		for sc.Scan() {
			last = sc.Text()
			var rec struct {
				Msg, Addr string
				Timeouts  string `json:"addr_timeouts"`
			}
			if json.Unmarshal(sc.Bytes(), &rec) == nil && rec.Msg == msg {
				addr <- [2]string{rec.Addr, rec.Timeouts}
			}
		}
		exited <- last
	}()
	select {
	case a := <-addr:
		p := &proc{cmd: cmd, addr: "http://" + a[0]}
		if a[1] != "" {
			p.timeouts = "http://" + a[1]
		}
		return p, nil
	case last := <-exited:
		return nil, fmt.Errorf("%s exited before it listened: %s", cmd.Path, last)
	case <-time.After(2 * time.Minute):
		_ = cmd.Process.Kill()
		return nil, fmt.Errorf("%s did not log %q", cmd.Path, msg)
	}
}

// startBare re-runs this binary as the baseline server.
func startBare() (*proc, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	return startProc(exec.Command(self, "bare-server"), "bare listening")
}

// bareServer is the baseline: a minimal net/http server. /sign reads the
// body and writes a token-sized JSON answer; /jwks writes the bytes it was
// given at /set-jwks.
func bareServer([]string) {
	answer := []byte(`{"token":"` + strings.Repeat("x", 300) + `","kid":"` + strings.Repeat("k", 43) + `","alg":"HS256","expires_at":"2026-11-22T05:11:14Z"}` + "\n")
	var jwks atomic.Pointer[[]byte]
	empty := []byte("{}")
	jwks.Store(&empty)
	mux := http.NewServeMux()
	mux.HandleFunc("POST /sign", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(answer)
	})
	// The raw ES256 signer behind the bare handler: what a server on
	// net/http that does nothing but sign costs per token.
	es256 := newRawTokens("ES256")
	mux.HandleFunc("POST /sign-es256", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		_, _ = fmt.Fprintf(w, `{"token":%q}`+"\n", es256.token(make([]byte, 16)))
	})
	// The bare verify endpoint: the raw verifier behind a handler that
	// decodes {"token": ...} and answers the claims, as keyd's does.
	for _, alg := range []string{"ES256", "HS256"} {
		v := newRawVerifier(alg)
		tok := v.tokens.token(make([]byte, 16))
		mux.HandleFunc("GET /token-"+strings.ToLower(alg), func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, tok) })
		mux.HandleFunc("POST /verify-"+strings.ToLower(alg), func(w http.ResponseWriter, r *http.Request) {
			var req struct {
				Token string `json:"token"`
			}
			if json.NewDecoder(r.Body).Decode(&req) != nil {
				http.Error(w, "bad request", http.StatusBadRequest)
				return
			}
			claims, ok := v.claims(req.Token)
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(map[string]any{"valid": ok, "claims": claims})
		})
	}
	mux.HandleFunc("POST /set-jwks", func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		jwks.Store(&b)
	})
	mux.HandleFunc("GET /jwks", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(*jwks.Load())
	})
	// The same handlers twice: on a server without timeouts (the least
	// net/http does) and on one with keyd's (what a server facing callers
	// it does not trust must set: net/http then sets deadlines per request).
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		os.Exit(1)
	}
	lt, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		os.Exit(1)
	}
	fmt.Fprintf(os.Stderr, `{"msg":"bare listening","addr":%q,"addr_timeouts":%q}`+"\n", ln.Addr().String(), lt.Addr().String())
	go func() {
		_ = (&http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 30 * time.Second,
			WriteTimeout: 30 * time.Second, IdleTimeout: 2 * time.Minute}).Serve(lt)
	}()
	_ = http.Serve(ln, mux)
}
