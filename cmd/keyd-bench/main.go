// Command keyd-bench measures keyd against the limits it should approach,
// side by side in one run on one machine: for each algorithm, signing over
// HTTP against an in-process raw signer of the same algorithm; HS256
// against a bare net/http handler; ES256 against the bare handler signing
// with the raw signer (what net/http allows a signing server); batch
// signing; the JWKS route against a minimal handler writing the same
// bytes; OpenBao transit's ES256 signing (with --bao); signing latency
// while an RSA-4096 key set rotates; the audit trail off, on and required;
// and the start-up of a thousand key sets (with --keysets).
//
// It starts keyd (--keyd, a built binary) and the baselines as processes of
// their own and reads their CPU time from /proc, so every figure is CPU per
// token of the process that did the work, and a ratio to its baseline.
//
//	go build -o keyd ./cmd/keyd && go run ./cmd/keyd-bench --keyd ./keyd
package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/crypto/cryptobyte"
	"golang.org/x/crypto/cryptobyte/asn1"

	"github.com/keyd-dev/keyd/internal/daemon"
)

const token = "keyd-bench-token"

// masterKey is the one master key of every keyd this run starts, so a
// restart opens the same database.
var masterKey = func() string {
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	return base64.StdEncoding.EncodeToString(key)
}()

var (
	keydBin    = flag.String("keyd", "./keyd", "keyd binary to start")
	duration   = flag.Duration("duration", 4*time.Second, "length of each measurement")
	conns      = flag.Int("conns", 32, "concurrent connections (keep-alive)")
	baoBin     = flag.String("bao", "", "OpenBao binary (scripts/dev-vault.sh build) to compare transit signing with; empty: skip")
	rotateKS   = flag.String("rotate", "rs4096", "key set to rotate back to back while measuring signing latency (rs4096: RSA-4096; none: the control)")
	keysets    = flag.Int("keysets", 0, "also measure the start-up of this many key sets (e.g. 1000); 0: skip")
	only       = flag.String("only", "", "run only these sections, comma-separated: sign, batch, jwks, rotation, audit, transit, startup, revocations, custody, backup (empty: all)")
	revs       = flag.Int("revocations", 0, "also measure keyd with none and with this many revocations in force (e.g. 1000000); 0: skip")
	redisBin   = flag.String("redis", "", "redis-server binary: the revocations section measures the Redis engine too; empty: bbolt only")
	rounds     = flag.Int("rounds", 3, "the revocations section's rounds: each figure measured this many times on each keyd in turn")
	backupN    = flag.Int("backup", 0, "also measure a backup and a restore of 1,000 key sets and this many revocations and logins (e.g. 1000000); 0: skip")
	revEngines = flag.String("revocation-engines", "", "the revocations section's engines, comma-separated: bbolt, redis (empty: bbolt, and redis with --redis)")
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "bare-server" {
		bareServer(os.Args[2:])
		return
	}
	if len(os.Args) > 1 && os.Args[1] == "bare-hsm-server" {
		bareHSMServer()
		return
	}
	flag.Parse()
	for _, s := range strings.Split(*only, ",") {
		if s != "" && !slices.Contains(sections, s) {
			fmt.Fprintf(os.Stderr, "keyd-bench: --only: unknown section %q (sections: %s)\n", s, strings.Join(sections, ", "))
			os.Exit(2)
		}
	}
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "keyd-bench:", err)
		os.Exit(1)
	}
}

var sections = []string{"sign", "batch", "jwks", "rotation", "audit", "transit", "startup", "revocations", "custody", "backup"}

// want says whether --only asks for section.
func want(section string) bool {
	return *only == "" || slices.Contains(strings.Split(*only, ","), section)
}

func run() error {
	dir, err := os.MkdirTemp("", "keyd-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	fmt.Printf("keyd-bench: %d cores (GOMAXPROCS %d), %s per measurement, %d connections, %s\n\n",
		runtime.NumCPU(), runtime.GOMAXPROCS(0), *duration, *conns, runtime.Version())

	keyd, err := startKeyd(dir, benchConfig(dir))
	if err != nil {
		return err
	}
	defer keyd.stop()
	bare, err := startBare()
	if err != nil {
		return err
	}
	defer bare.stop()

	body := []byte(`{"claims":{"sub":"alice","aud":"billing"},"ttl":"5m"}`)
	if want("sign") {
		singleSign(keyd, bare, body)
	}
	if want("batch") {
		batchSign(keyd)
	}
	if want("jwks") {
		if err := jwksServing(keyd, bare); err != nil {
			return err
		}
	}
	if want("rotation") {
		if err := rotationImpact(keyd, body); err != nil {
			return err
		}
	}
	if want("audit") {
		if err := auditCost(dir, body); err != nil {
			return err
		}
	}
	if *baoBin != "" && want("transit") {
		if err := transit(dir, body, keyd, bare); err != nil {
			return err
		}
	}
	if *keysets > 0 && want("startup") {
		keyd.stop()
		if err := startup(dir, *keysets); err != nil {
			return err
		}
	}
	if want("custody") {
		keyd.stop() // idle or not, it must not share the cores with the custody's figures
		if *baoBin != "" {
			if err := transitCustody(dir, body); err != nil {
				return err
			}
		}
		if err := pkcs11Custody(dir, body); err != nil {
			return err
		}
	}
	if *revs > 0 && want("revocations") {
		keyd.stop()
		if err := revocationsAtScale(dir, *revs); err != nil {
			return err
		}
	}
	if *backupN > 0 && want("backup") {
		keyd.stop()
		if err := backupAtScale(dir, 1000, *backupN); err != nil {
			return err
		}
	}
	return nil
}

// singleSign measures /sign for each algorithm against the raw signer, and
// the bare handler that HS256 is held to.
func singleSign(keyd, bare *proc, body []byte) {
	fmt.Println("Single sign over HTTP vs an in-process raw signer (CPU per token of the process doing the work):")
	fmt.Printf("%-6s %12s %12s %9s %9s | %12s %12s | %s\n", "alg", "keyd tok/s", "keyd µs/tok", "p50", "p99", "raw tok/s", "raw µs/tok", "ratio raw/keyd CPU")
	var hsCPU, esCPU, esRaw, esRate float64
	for _, alg := range []string{"ES256", "EdDSA", "HS256", "RS256"} {
		ks := strings.ToLower(alg)
		r := load(keyd, "POST", "/v1/keysets/"+ks+"/sign", body, 1)
		raw := rawSign(alg)
		fmt.Printf("%-6s %12.0f %12.1f %9s %9s | %12.0f %12.1f | %.2f\n", alg, r.perSec, r.cpuPer, r.p50, r.p99, raw.perSec, raw.cpuPer, raw.cpuPer/r.cpuPer)
		switch alg {
		case "HS256":
			hsCPU = r.cpuPer
		case "ES256":
			esCPU, esRaw, esRate = r.cpuPer, raw.cpuPer, r.perSec
		}
	}
	b := load(bare, "POST", "/sign", body, 1)
	fmt.Printf("\nbare net/http handler (reads the body, writes a token-sized answer): %.0f req/s, %.1f µs CPU/req; keyd HS256 costs %.2fx that\n",
		b.perSec, b.cpuPer, hsCPU/b.cpuPer)
	// A signing server over net/http pays at least the bare handler and
	// the raw signature: their sum is one ceiling of the ES256 ratio, and
	// the bare handler signing with the raw signer measures the other.
	bs := load(bare, "POST", "/sign-es256", body, 1)
	fmt.Printf("ES256 ceilings over net/http: raw / (raw + bare handler) = %.1f / %.1f = %.2f; the bare handler signing with the raw signer: %.0f tok/s, %.1f µs CPU/token, ratio %.2f\n",
		esRaw, esRaw+b.cpuPer, esRaw/(esRaw+b.cpuPer), bs.perSec, bs.cpuPer, esRaw/bs.cpuPer)
	fmt.Printf("keyd ES256 against that signing handler: %.2f of its throughput, %.1f µs CPU/token more (auth, JSON, claims rules, metrics, logging)\n",
		esRate/bs.perSec, esCPU-bs.cpuPer)
}

// batchSign measures sign-batch of 100 ES256 items against the raw signer.
func batchSign(keyd *proc) {
	bt := load(keyd, "POST", "/v1/keysets/es256/sign-batch", batchBody(100), 100)
	raw := rawSign("ES256")
	fmt.Printf("\nbatch sign, 100 ES256 items: %.0f tokens/s, %.1f µs CPU/token; raw signer %.0f tokens/s: ratio %.2f\n",
		bt.perSec, bt.cpuPer, raw.perSec, bt.perSec/raw.perSec)
}

// batchBody is a sign-batch request of n items.
func batchBody(n int) []byte {
	var items bytes.Buffer
	items.WriteString(`{"items":[`)
	for i := range n {
		if i > 0 {
			items.WriteByte(',')
		}
		items.WriteString(`{"claims":{"sub":"alice","aud":"billing"}}`)
	}
	items.WriteString(`]}`)
	return items.Bytes()
}

// jwksServing measures keyd's JWKS route against the minimal handler
// writing the same document.
func jwksServing(keyd, bare *proc) error {
	doc, err := fetch(keyd.addr + "/.well-known/jwks.json")
	if err != nil {
		return err
	}
	if err := post(bare.addr+"/set-jwks", doc); err != nil {
		return err
	}
	jk := load(keyd, "GET", "/.well-known/jwks.json", nil, 1)
	jb := load(bare, "GET", "/jwks", nil, 1)
	fmt.Printf("\nJWKS (%d bytes): keyd %.0f req/s (%.1f µs CPU/req), minimal handler %.0f req/s (%.1f µs CPU/req): ratio %.2f\n",
		len(doc), jk.perSec, jk.cpuPer, jb.perSec, jb.cpuPer, jk.perSec/jb.perSec)
	return nil
}

func benchConfig(dir string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "listen: 127.0.0.1:0\nstorage: {backend: file, file: {path: %q}}\nkeysets:\n", filepath.Join(dir, "keyd.db"))
	for _, alg := range []string{"ES256", "EdDSA", "HS256", "RS256"} {
		fmt.Fprintf(&b, "  - {name: %s, algorithm: %s, rotation: \"@daily\", token_ttl: 15m, jwks_max_age: 5m}\n", strings.ToLower(alg), alg)
	}
	fmt.Fprintf(&b, "  - {name: rs4096, algorithm: RS256, rsa_bits: 4096, rotation: \"@daily\", token_ttl: 15m, jwks_max_age: 5m}\n")
	fmt.Fprintf(&b, "auth:\n  tokens:\n    - {name: bench, sha256: %q, scopes: [admin, \"sign:*\", \"verify:*\"]}\n", daemon.TokenHash(token))
	return b.String()
}

// --- processes ------------------------------------------------------------------

type proc struct {
	cmd  *exec.Cmd
	addr string
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
	addr := make(chan string, 1)
	exited := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		last := ""
		for sc.Scan() {
			last = sc.Text()
			var rec struct{ Msg, Addr string }
			if json.Unmarshal(sc.Bytes(), &rec) == nil && rec.Msg == msg {
				addr <- rec.Addr
			}
		}
		exited <- last
	}()
	select {
	case a := <-addr:
		return &proc{cmd: cmd, addr: "http://" + a}, nil
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
	mux.HandleFunc("POST /set-jwks", func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		jwks.Store(&b)
	})
	mux.HandleFunc("GET /jwks", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(*jwks.Load())
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		os.Exit(1)
	}
	fmt.Fprintf(os.Stderr, `{"msg":"bare listening","addr":%q}`+"\n", ln.Addr().String())
	_ = http.Serve(ln, mux)
}

// --- load -----------------------------------------------------------------------

type result struct {
	perSec   float64 // units per second (tokens, or requests)
	cpuPer   float64 // µs of the target's CPU per unit
	p50, p99 time.Duration
}

var client = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1024, MaxConnsPerHost: 1024}, Timeout: time.Minute}

// load sends requests from conns goroutines for the duration; each
// successful request counts units (tokens per request).
func load(p *proc, method, path string, body []byte, units int) result {
	return loadAs(p, method, path, body, units, "Authorization", "Bearer "+token)
}

// loadAs is load with the credential in another header.
func loadAs(p *proc, method, path string, body []byte, units int, header, value string) result {
	url := p.addr + path
	// Warm the connections and the server.
	runLoad(method, url, body, 300*time.Millisecond, header, value)
	cpu0 := p.cpu()
	start := time.Now()
	lat := runLoad(method, url, body, *duration, header, value)
	elapsed := time.Since(start)
	cpu := p.cpu() - cpu0
	return summarize(lat, units, elapsed, cpu)
}

func summarize(lat []time.Duration, units int, elapsed, cpu time.Duration) result {
	slices.Sort(lat)
	n := len(lat) * units
	if n == 0 {
		return result{}
	}
	return result{
		perSec: float64(n) / elapsed.Seconds(),
		cpuPer: float64(cpu.Microseconds()) / float64(n),
		p50:    lat[len(lat)/2].Round(time.Microsecond), p99: lat[len(lat)*99/100].Round(time.Microsecond),
	}
}

func runLoad(method, url string, body []byte, d time.Duration, header, value string) []time.Duration {
	var mu sync.Mutex
	var all []time.Duration
	var wg sync.WaitGroup
	stop := time.Now().Add(d)
	for range *conns {
		wg.Go(func() {
			var mine []time.Duration
			for time.Now().Before(stop) {
				t0 := time.Now()
				req, _ := http.NewRequest(method, url, bytes.NewReader(body))
				req.Header.Set(header, value)
				resp, err := client.Do(req)
				if err != nil {
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode == 200 {
					mine = append(mine, time.Since(t0))
				}
			}
			mu.Lock()
			all = append(all, mine...)
			mu.Unlock()
		})
	}
	wg.Wait()
	return all
}

func fetch(url string) ([]byte, error) {
	resp, err := client.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	return io.ReadAll(resp.Body)
}

func post(url string, body []byte) error {
	resp, err := client.Post(url, "application/json", bytes.NewReader(body))
	if err != nil {
		return err
	}
	resp.Body.Close()
	return nil
}

// --- the raw signer ---------------------------------------------------------------

// rawSign makes JWS tokens of alg in this process, on every core, the
// least a signer must do: encode claims with a fresh jti, encode, sign.
func rawSign(alg string) result {
	raw := newRawTokens(alg)
	var count atomic.Int64
	var ru0, ru1 syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)
	start := time.Now()
	stop := start.Add(*duration)
	var wg sync.WaitGroup
	for range runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			jti := make([]byte, 16)
			for time.Now().Before(stop) {
				_ = raw.token(jti)
				count.Add(1)
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru1)
	cpu := time.Duration(syscall.TimevalToNsec(ru1.Utime)-syscall.TimevalToNsec(ru0.Utime)) +
		time.Duration(syscall.TimevalToNsec(ru1.Stime)-syscall.TimevalToNsec(ru0.Stime))
	n := count.Load()
	return result{perSec: float64(n) / elapsed.Seconds(), cpuPer: float64(cpu.Microseconds()) / float64(n)}
}

// rawTokens makes JWS tokens of one algorithm, the least a signer must do.
type rawTokens struct {
	header string
	sign   func([]byte) []byte
}

func newRawTokens(alg string) *rawTokens {
	return &rawTokens{
		header: base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"` + alg + `","kid":"bench","typ":"JWT"}`)),
		sign:   rawSigner(alg),
	}
}

// token encodes claims with a fresh jti (read into jti, 16 bytes), encodes,
// signs.
func (t *rawTokens) token(jti []byte) string {
	_, _ = rand.Read(jti)
	now := time.Now().Unix()
	payload := fmt.Appendf(nil, `{"aud":"billing","exp":%d,"iat":%d,"jti":"%s","sub":"alice"}`, now+300, now, base64.RawURLEncoding.EncodeToString(jti))
	input := t.header + "." + base64.RawURLEncoding.EncodeToString(payload)
	return input + "." + base64.RawURLEncoding.EncodeToString(t.sign([]byte(input)))
}

// p256RS turns a DER ECDSA P-256 signature into JWS's R||S.
func p256RS(der []byte) []byte {
	var seq, r, s cryptobyte.String
	in := cryptobyte.String(der)
	in.ReadASN1(&seq, asn1.SEQUENCE)
	seq.ReadASN1(&r, asn1.INTEGER)
	seq.ReadASN1(&s, asn1.INTEGER)
	out := make([]byte, 64)
	rb, sb := bytes.TrimLeft(r, "\x00"), bytes.TrimLeft(s, "\x00")
	copy(out[32-len(rb):32], rb)
	copy(out[64-len(sb):], sb)
	return out
}

func rawSigner(alg string) func([]byte) []byte {
	switch alg {
	case "ES256":
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		return func(in []byte) []byte {
			d := sha256.Sum256(in)
			der, _ := ecdsa.SignASN1(rand.Reader, k, d[:])
			return p256RS(der)
		}
	case "EdDSA":
		_, k, _ := ed25519.GenerateKey(rand.Reader)
		return func(in []byte) []byte { return ed25519.Sign(k, in) }
	case "HS256":
		secret := make([]byte, 32)
		_, _ = rand.Read(secret)
		return func(in []byte) []byte { m := hmac.New(sha256.New, secret); m.Write(in); return m.Sum(nil) }
	case "RS256":
		k, _ := rsa.GenerateKey(rand.Reader, 2048)
		return func(in []byte) []byte {
			d := sha256.Sum256(in)
			sig, _ := rsa.SignPKCS1v15(nil, k, 5 /* crypto.SHA256 */, d[:])
			return sig
		}
	}
	panic("unknown algorithm " + alg)
}

// --- signing while an RSA-4096 key set rotates ------------------------------------------

func rotationImpact(keyd *proc, body []byte) error {
	url := keyd.addr + "/v1/keysets/es256/sign"
	auth := "Bearer " + token
	base := summarize(runLoad("POST", url, body, *duration, "Authorization", auth), 1, *duration, 0)
	ctx, cancel := context.WithCancel(context.Background())
	rotations := 0
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			if *rotateKS == "none" { // the control: the same two windows, nothing rotating
				<-ctx.Done()
				return
			}
			req, _ := http.NewRequest("POST", keyd.addr+"/v1/keysets/"+*rotateKS+"/rotate", strings.NewReader(`{"force":true}`))
			req.Header.Set("Authorization", "Bearer "+token)
			if resp, err := client.Do(req); err == nil {
				resp.Body.Close()
				rotations++
			}
		}
	}()
	during := summarize(runLoad("POST", url, body, *duration, "Authorization", auth), 1, *duration, 0)
	cancel()
	<-done
	fmt.Printf("\nES256 sign while key set %s rotates back to back (%d rotations): p50 %s -> %s, p99 %s -> %s (%+.0f%%)\n",
		*rotateKS, rotations, base.p50, during.p50, base.p99, during.p99, 100*(float64(during.p99)/float64(base.p99)-1))
	return nil
}

// --- audit.required -----------------------------------------------------------------

// auditCost measures ES256 signing with the audit trail off, on, and
// required (every token waits for its record's group-committed fsync).
func auditCost(dir string, body []byte) error {
	fmt.Printf("\nES256 sign with the audit trail (%d connections):", *conns)
	var base float64
	for _, mode := range []string{"off", "on", "required"} {
		sub := filepath.Join(dir, "audit-"+mode)
		if err := os.MkdirAll(sub, 0o700); err != nil {
			return err
		}
		cfg := fmt.Sprintf("listen: 127.0.0.1:0\nstorage: {backend: file, file: {path: %q}}\n", filepath.Join(sub, "keyd.db")) +
			"keysets:\n  - {name: es256, algorithm: ES256, rotation: \"@daily\", token_ttl: 15m, jwks_max_age: 5m}\n" +
			fmt.Sprintf("auth:\n  tokens:\n    - {name: bench, sha256: %q, scopes: [\"sign:*\"]}\n", daemon.TokenHash(token))
		if mode != "off" {
			cfg += fmt.Sprintf("audit: {path: %q, required: %v}\n", filepath.Join(sub, "audit.log"), mode == "required")
		}
		p, err := startKeyd(sub, cfg)
		if err != nil {
			return err
		}
		idle0 := machineIdle()
		r := load(p, "POST", "/v1/keysets/es256/sign", body, 1)
		idle := machineIdle() - idle0
		p.stop()
		if mode == "off" {
			base = r.perSec
		}
		fmt.Printf("\n  %-8s %8.0f tok/s (%.2f of off), %5.1f µs CPU/tok, p50 %s, p99 %s, machine idle %.0f%%",
			mode, r.perSec, r.perSec/base, r.cpuPer, r.p50, r.p99, 100*idle.Seconds()/(float64(runtime.NumCPU())*(*duration+300*time.Millisecond).Seconds()))
	}
	fmt.Println()
	return nil
}

// --- OpenBao transit --------------------------------------------------------------

// transit measures OpenBao transit's ES256 signing, then keyd's and the
// bare signing handler's right after it, each as a multiple of OpenBao's.
func transit(dir string, body []byte, keyd, bare *proc) error {
	bao, call, err := startBao(dir, "")
	if err != nil {
		return err
	}
	defer bao.stop()
	if err := call("POST", "/v1/transit/keys/es", `{"type":"ecdsa-p256"}`); err != nil {
		return err
	}
	// Transit signs a payload the caller encoded: the same claims as keyd's.
	input := base64.StdEncoding.EncodeToString([]byte(`{"sub":"alice","aud":"billing"}`))
	req := []byte(`{"input":"` + input + `","marshaling_algorithm":"jws","hash_algorithm":"sha2-256"}`)
	r := loadAs(bao, "POST", "/v1/transit/sign/es", req, 1, "X-Vault-Token", "root")
	fmt.Printf("\nOpenBao transit ES256 sign (marshaling_algorithm=jws): %.0f signatures/s, %.1f µs CPU each, p99 %s\n", r.perSec, r.cpuPer, r.p99)
	bao.stop()
	k := load(keyd, "POST", "/v1/keysets/es256/sign", body, 1)
	bs := load(bare, "POST", "/sign-es256", body, 1)
	fmt.Printf("then keyd ES256 %.0f tok/s (%.1fx OpenBao), the bare handler signing with the raw signer %.0f tok/s (%.1fx)\n",
		k.perSec, k.perSec/r.perSec, bs.perSec, bs.perSec/r.perSec)
	return nil
}

// --- a thousand key sets ------------------------------------------------------------

func startup(dir string, n int) error {
	sub := filepath.Join(dir, "many")
	if err := os.MkdirAll(sub, 0o700); err != nil {
		return err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "listen: 127.0.0.1:0\nstorage: {backend: file, file: {path: %q}}\nkeysets:\n", filepath.Join(sub, "keyd.db"))
	algs := []string{"ES256", "EdDSA", "HS256"}
	rsa := 0
	for i := range n {
		alg := algs[i%3]
		if i%(max(n/50, 1)) == 0 && rsa < 50 {
			alg, rsa = "RS256", rsa+1
		}
		fmt.Fprintf(&b, "  - {name: ks%04d, algorithm: %s, rotation: \"@daily\", token_ttl: 15m, jwks_max_age: 5m}\n", i, alg)
	}
	fmt.Fprintf(&b, "auth:\n  tokens:\n    - {name: bench, sha256: %q, scopes: [admin, \"sign:*\"]}\n", daemon.TokenHash(token))
	cfg := b.String()
	t0 := time.Now()
	p, err := startKeyd(sub, cfg)
	if err != nil {
		return err
	}
	cold := time.Since(t0)
	rss := p.rss()
	one := load(p, "POST", "/v1/keysets/ks0001/sign", []byte(`{"claims":{"sub":"alice"}}`), 1)
	p.stop()
	t0 = time.Now()
	p, err = startKeyd(sub, cfg)
	if err != nil {
		return err
	}
	warm := time.Since(t0)
	p.stop()
	fmt.Printf("\n%d key sets (%d RSA-2048): cold start ready in %s, warm restart ready in %s, RSS %d MiB; EdDSA sign of one key set: %.0f tok/s, p99 %s\n",
		n, rsa, cold.Round(time.Millisecond), warm.Round(time.Millisecond), rss>>20, one.perSec, one.p99)
	return nil
}
