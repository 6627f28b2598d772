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
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/keyd-dev/keyd/internal/config"
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
	keydBin      = flag.String("keyd", "./keyd", "keyd binary to start")
	duration     = flag.Duration("duration", 4*time.Second, "length of each measurement")
	conns        = flag.Int("conns", 32, "concurrent connections (keep-alive)")
	baoBin       = flag.String("bao", "", "OpenBao binary (scripts/dev-vault.sh build) to compare transit signing with; empty: skip")
	rotateKS     = flag.String("rotate", "rs4096", "key set to rotate back to back while measuring signing latency (rs4096: RSA-4096; none: the control)")
	keysets      = flag.Int("keysets", 0, "also measure the start-up of this many key sets (e.g. 1000); 0: skip")
	only         = flag.String("only", "", "run only these sections, comma-separated: sign, verify, batch, jwks, rotation, audit, transit, startup, revocations, custody, backup (empty: all)")
	revs         = flag.Int("revocations", 0, "also measure keyd with none and with this many revocations in force (e.g. 1000000); 0: skip")
	verifyRounds = flag.Int("verify-rounds", 5, "the verify section's rounds: keyd and the bare handler measured this many times each, taking turns")
	redisBin     = flag.String("redis", "", "redis-server binary: the revocations section measures the Redis engine too; empty: bbolt only")
	rounds       = flag.Int("rounds", 3, "the revocations section's rounds: each figure measured this many times on each keyd in turn")
	backupN      = flag.Int("backup", 0, "also measure a backup and a restore of 1,000 key sets and this many revocations and logins (e.g. 1000000); 0: skip")
	revEngines   = flag.String("revocation-engines", "", "the revocations section's engines, comma-separated: bbolt, redis (empty: bbolt, and redis with --redis)")
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

var sections = []string{"sign", "verify", "batch", "jwks", "rotation", "audit", "transit", "startup", "revocations", "custody", "backup"}

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
	if want("verify") {
		if err := verifyOverHTTP(keyd, bare, body); err != nil {
			return err
		}
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

// verifyOverHTTP measures keyd's verify endpoint against the bare
// handler doing the same raw verification of a token of the same claims,
// and the raw verifier in process (the crypto limit).
func verifyOverHTTP(keyd, bare *proc, body []byte) error {
	fmt.Println("\nVerify over HTTP: keyd's endpoint vs the bare net/http handler with the raw verifier (both decode the request and answer the claims):")
	fmt.Printf("%-6s %-15s %10s %11s | %10s %11s | %6s %6s | %s\n", "alg", "bare server", "keyd req/s", "keyd µs/req", "bare req/s", "bare µs/req", "req/s", "CPU", "raw in process µs/token")
	for _, alg := range []string{"ES256", "HS256"} {
		ks := strings.ToLower(alg)
		signed, err := postAuth(keyd.addr+"/v1/keysets/"+ks+"/sign", body)
		if err != nil {
			return err
		}
		var tok struct{ Token string }
		if err := json.Unmarshal(signed, &tok); err != nil {
			return fmt.Errorf("sign: %s", signed)
		}
		bareTok, err := fetch(bare.addr + "/token-" + ks)
		if err != nil {
			return err
		}
		keydReq, bareReq := []byte(`{"token":"`+tok.Token+`"}`), []byte(`{"token":"`+string(bareTok)+`"}`)
		// Both must find their token valid: an answer of invalid is a 200 too.
		for url, req := range map[string][]byte{keyd.addr + "/v1/keysets/" + ks + "/verify": keydReq, bare.addr + "/verify-" + ks: bareReq} {
			if out, err := postAuth(url, req); err != nil || !bytes.Contains(out, []byte(`"valid":true`)) {
				return fmt.Errorf("%s: %s %v", url, out, err)
			}
		}
		// Rounds taking turns, the median of each figure: the machine is
		// shared, and a burst of noise lands on one round, not on one side.
		withTimeouts := &proc{cmd: bare.cmd, addr: bare.timeouts}
		targets := []struct {
			p       *proc
			path    string
			req     []byte
			results []result
		}{{keyd, "/v1/keysets/" + ks + "/verify", keydReq, nil}, {bare, "/verify-" + ks, bareReq, nil}, {withTimeouts, "/verify-" + ks, bareReq, nil}}
		for round := range *verifyRounds {
			for j := range targets { // each target first in turn
				t := &targets[(j+round)%len(targets)]
				t.results = append(t.results, load(t.p, "POST", t.path, t.req, 1))
			}
		}
		k, raw := medianResult(targets[0].results), rawVerify(alg)
		for i, b := range []result{medianResult(targets[1].results), medianResult(targets[2].results)} {
			fmt.Printf("%-6s %-15s %10.0f %11.1f | %10.0f %11.1f | %6.2f %6.2f | %.1f\n", alg, []string{"no timeouts", "keyd's timeouts"}[i],
				k.perSec, k.cpuPer, b.perSec, b.cpuPer, k.perSec/b.perSec, b.cpuPer/k.cpuPer, raw.cpuPer)
		}
	}
	fmt.Println("(ratios keyd/bare: throughput, and bare CPU per request over keyd's; medians of --verify-rounds rounds, each target")
	fmt.Println(" first in turn; keyd's server sets read, write and idle timeouts, for which net/http sets deadlines per request)")
	return nil
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
	fmt.Fprintf(&b, "auth:\n  tokens:\n    - {name: bench, sha256: %q, scopes: [admin, \"sign:*\", \"verify:*\"]}\n", config.TokenHash(token))
	return b.String()
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
			fmt.Sprintf("auth:\n  tokens:\n    - {name: bench, sha256: %q, scopes: [\"sign:*\"]}\n", config.TokenHash(token))
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
	fmt.Fprintf(&b, "auth:\n  tokens:\n    - {name: bench, sha256: %q, scopes: [admin, \"sign:*\"]}\n", config.TokenHash(token))
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
