package main

import (
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/keyd-dev/keyd/internal/config"
)

// --- keys in custody --------------------------------------------------------------

// startBao runs an OpenBao dev server with a Transit mount; on the CPUs
// cpus (taskset's list) alone when cpus is set.
func startBao(dir, cpus string) (*proc, func(method, path, body string) error, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, nil, err
	}
	addr := ln.Addr().String()
	ln.Close()
	args := []string{*baoBin, "server", "-dev", "-dev-root-token-id=root", "-dev-no-store-token", "-dev-listen-address=" + addr}
	if cpus != "" {
		args = append([]string{"taskset", "-c", cpus}, args...) // taskset execs it: the pid is OpenBao's
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Dir = dir
	if err := cmd.Start(); err != nil {
		return nil, nil, err
	}
	bao := &proc{cmd: cmd, addr: "http://" + addr}
	call := func(method, path, body string) error {
		req, _ := http.NewRequest(method, bao.addr+path, strings.NewReader(body))
		req.Header.Set("X-Vault-Token", "root")
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if resp.StatusCode >= 300 {
			b, _ := io.ReadAll(resp.Body)
			return fmt.Errorf("%s %s: %d %s", method, path, resp.StatusCode, b)
		}
		return nil
	}
	deadline := time.Now().Add(30 * time.Second)
	for call("GET", "/v1/sys/health", "") != nil {
		if time.Now().After(deadline) {
			bao.stop()
			return nil, nil, errors.New("OpenBao did not start")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := call("POST", "/v1/sys/mounts/transit", `{"type":"transit"}`); err != nil {
		bao.stop()
		return nil, nil, err
	}
	return bao, call, nil
}

// transitCustody measures keyd signing ES256 with its key in Vault
// Transit against calling Transit directly as keyd does (a prehashed
// digest, asn1), at the same concurrency, on the same OpenBao: first with
// OpenBao sharing every CPU with keyd and the load, then, as a Vault on
// machines of its own would be, with OpenBao alone on the last CPU and
// keyd and the load on the others (taskset; skipped without it or with
// one CPU).
func transitCustody(dir string, body []byte) error {
	if err := transitRun(filepath.Join(dir, "transit-custody"), body, ""); err != nil {
		return err
	}
	n := runtime.NumCPU()
	if _, err := exec.LookPath("taskset"); err != nil || n < 2 {
		fmt.Println("  (OpenBao on a CPU of its own: skipped, it needs taskset and 2 CPUs)")
		return nil
	}
	own, rest, all := fmt.Sprint(n-1), fmt.Sprintf("0-%d", n-2), fmt.Sprintf("0-%d", n-1)
	if err := pinSelf(rest); err != nil {
		return err
	}
	defer func() { _ = pinSelf(all) }()
	return transitRun(filepath.Join(dir, "transit-custody-pinned"), body, own)
}

// pinSelf keeps every thread of this process, and so the processes it
// starts next, on the CPUs cpus (taskset's list).
func pinSelf(cpus string) error {
	if out, err := exec.Command("taskset", "-a", "-p", "-c", cpus, fmt.Sprint(os.Getpid())).CombinedOutput(); err != nil {
		return fmt.Errorf("taskset: %v: %s", err, out)
	}
	return nil
}

// transitRun is one measurement of transitCustody, in sub, with OpenBao on
// the CPUs baoCPUs alone when set.
func transitRun(sub string, body []byte, baoCPUs string) error {
	bao, call, err := startBao(filepath.Dir(sub), baoCPUs)
	if err != nil {
		return err
	}
	defer bao.stop()
	if err := call("POST", "/v1/transit/keys/direct", `{"type":"ecdsa-p256"}`); err != nil {
		return err
	}
	digest := sha256.Sum256([]byte("eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9"))
	req := []byte(`{"input":"` + base64.StdEncoding.EncodeToString(digest[:]) + `","prehashed":true,"marshaling_algorithm":"asn1"}`)
	direct := loadAs(bao, "POST", "/v1/transit/sign/direct/sha2-256", req, 1, "X-Vault-Token", "root")
	inputs := strings.Repeat(`{"input":"`+base64.StdEncoding.EncodeToString(digest[:])+`"},`, 100)
	batchReq := []byte(`{"batch_input":[` + strings.TrimSuffix(inputs, ",") + `],"prehashed":true,"marshaling_algorithm":"asn1"}`)
	directBatch := loadAs(bao, "POST", "/v1/transit/sign/direct/sha2-256", batchReq, 100, "X-Vault-Token", "root")
	cfg := fmt.Sprintf(`listen: 127.0.0.1:0
storage:
  backend: vault
  vault: {address: %q, mount: secret, prefix: keyd-bench, auth: {method: token}}
keysets:
  - {name: app, algorithm: ES256, rotation: "@daily", token_ttl: 15m, jwks_max_age: 5m, custody: {type: vault_transit}}
auth:
  tokens:
    - {name: bench, sha256: %q, scopes: [admin, "sign:*"]}
`, bao.addr, config.TokenHash(token))
	t0 := time.Now()
	k, err := startKeydEnv(sub, cfg, []string{"VAULT_TOKEN=root"})
	if err != nil {
		return err
	}
	defer k.stop()
	ready := time.Since(t0)
	c0 := bao.cpu()
	keyd := load(k, "POST", "/v1/keysets/app/sign", body, 1)
	baoPerToken := float64((bao.cpu() - c0).Microseconds()) / (keyd.perSec * duration.Seconds())
	c0 = bao.cpu()
	batch := load(k, "POST", "/v1/keysets/app/sign-batch", batchBody(100), 100)
	baoPerBatched := float64((bao.cpu() - c0).Microseconds()) / (batch.perSec * duration.Seconds())
	where := fmt.Sprintf("OpenBao, keyd and the load sharing %d CPUs", runtime.NumCPU())
	if baoCPUs != "" {
		where = fmt.Sprintf("OpenBao alone on CPU %s, keyd and the load on the others", baoCPUs)
	}
	fmt.Printf("\nES256 with the key in Vault Transit (%s), %d connections:\n", where, *conns)
	fmt.Printf("  Transit called directly:        %8.0f signatures/s, p99 %s, OpenBao %.1f µs CPU each\n", direct.perSec, direct.p99, direct.cpuPer)
	fmt.Printf("  keyd /sign through it:          %8.0f tokens/s, p99 %s, keyd %.1f µs CPU per token, OpenBao %.1f µs (%.2f of direct; keyd ready in %s)\n",
		keyd.perSec, keyd.p99, keyd.cpuPer, baoPerToken, keyd.perSec/direct.perSec, ready.Round(time.Millisecond))
	fmt.Printf("  Transit directly, batches of 100: %6.0f signatures/s, OpenBao %.1f µs CPU each\n", directBatch.perSec, directBatch.cpuPer)
	fmt.Printf("  keyd /sign-batch of 100:        %8.0f tokens/s, keyd %.1f µs CPU per token, OpenBao %.1f µs (%.2f of Transit's batches)\n",
		batch.perSec, batch.cpuPer, baoPerBatched, batch.perSec/directBatch.perSec)
	return nil
}
