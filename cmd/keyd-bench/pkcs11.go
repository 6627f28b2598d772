//go:build pkcs11

package main

import (
	"crypto"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/ThalesGroup/crypto11"
	"github.com/keyd-dev/keyd/internal/config"
)

const softhsm = "/usr/lib/softhsm/libsofthsm2.so"

// pkcs11Custody measures keyd (built with -tags pkcs11, as this tool must
// be) signing ES256 with its key in a SoftHSM token against crypto11's own
// concurrent signing loop on the same token, at the same concurrency.
func pkcs11Custody(dir string, body []byte) error {
	sub := filepath.Join(dir, "pkcs11")
	if err := os.MkdirAll(filepath.Join(sub, "tokens"), 0o700); err != nil {
		return err
	}
	conf := filepath.Join(sub, "softhsm2.conf")
	if err := os.WriteFile(conf, []byte("directories.tokendir = "+filepath.Join(sub, "tokens")+"\nobjectstore.backend = file\n"), 0o600); err != nil {
		return err
	}
	os.Setenv("SOFTHSM2_CONF", conf)
	if out, err := exec.Command("softhsm2-util", "--init-token", "--free", "--label", "bench", "--pin", "1234", "--so-pin", "5678").CombinedOutput(); err != nil {
		return fmt.Errorf("softhsm2-util: %v: %s", err, out)
	}
	c, err := crypto11.Configure(&crypto11.Config{Path: softhsm, TokenLabel: "bench", Pin: "1234"})
	if err != nil {
		return err
	}
	key, err := c.GenerateECDSAKeyPairWithLabel([]byte("direct"), []byte("direct"), elliptic.P256())
	if err != nil {
		return err
	}
	digest := sha256.Sum256([]byte("eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9"))
	var n atomic.Int64
	cpu0 := selfCPU()
	start := time.Now()
	stop := start.Add(*duration)
	var wg sync.WaitGroup
	for range *conns {
		wg.Go(func() {
			for time.Now().Before(stop) {
				if _, err := key.Sign(rand.Reader, digest[:], crypto.SHA256); err == nil {
					n.Add(1)
				}
			}
		})
	}
	wg.Wait()
	direct := float64(n.Load()) / time.Since(start).Seconds()
	directCPU := float64((selfCPU() - cpu0).Microseconds()) / float64(n.Load())
	_ = c.Close()

	self, err := os.Executable()
	if err != nil {
		return err
	}
	bareCmd := exec.Command(self, "bare-hsm-server")
	bareCmd.Env = append(os.Environ(), "SOFTHSM2_CONF="+conf)
	bare, err := startProc(bareCmd, "bare listening")
	if err != nil {
		return err
	}
	defer bare.stop()
	bs := load(bare, "POST", "/sign", body, 1)

	cfg := fmt.Sprintf(`listen: 127.0.0.1:0
storage: {backend: file, file: {path: %q}}
keysets:
  - {name: app, algorithm: ES256, rotation: "@daily", token_ttl: 15m, jwks_max_age: 5m, custody: {type: pkcs11, module: %q, token_label: bench}}
auth:
  tokens:
    - {name: bench, sha256: %q, scopes: [admin, "sign:*"]}
`, filepath.Join(sub, "keyd.db"), softhsm, config.TokenHash(token))
	k, err := startKeydEnv(sub, cfg, []string{"SOFTHSM2_CONF=" + conf, "KEYD_PKCS11_PIN=1234"})
	if err != nil {
		return fmt.Errorf("keyd with PKCS#11 custody (is --keyd built with -tags pkcs11?): %w", err)
	}
	defer k.stop()
	r := load(k, "POST", "/v1/keysets/app/sign", body, 1)
	batch := load(k, "POST", "/v1/keysets/app/sign-batch", batchBody(100), 100)
	fmt.Printf("\nES256 with the key in a SoftHSM token, %d concurrent signers:\n", *conns)
	fmt.Printf("  crypto11's own loop:     %8.0f signatures/s, %.1f µs CPU each\n", direct, directCPU)
	fmt.Printf("  a bare net/http handler signing with it: %8.0f tokens/s, p99 %s, %.1f µs CPU per token (%.2f of the loop)\n", bs.perSec, bs.p99, bs.cpuPer, bs.perSec/direct)
	fmt.Printf("  keyd /sign through it:   %8.0f tokens/s, p99 %s, %.1f µs CPU per token (%.2f of the loop, %.2f of the bare handler)\n", r.perSec, r.p99, r.cpuPer, r.perSec/direct, r.perSec/bs.perSec)
	fmt.Printf("  keyd /sign-batch of 100: %8.0f tokens/s, %.1f µs CPU per token (%.2f of the loop)\n", batch.perSec, batch.cpuPer, batch.perSec/direct)
	return nil
}

func selfCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// bareHSMServer is the least a signing server on net/http with its key in
// the token does: read the body, make a JWS with a fresh jti, sign it
// with crypto11 (the key pkcs11Custody made, labelled direct, in the
// token of SOFTHSM2_CONF), answer the token in JSON.
func bareHSMServer() {
	c, err := crypto11.Configure(&crypto11.Config{Path: softhsm, TokenLabel: "bench", Pin: "1234"})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	key, err := c.FindKeyPair(nil, []byte("direct"))
	if err != nil || key == nil {
		fmt.Fprintln(os.Stderr, "the key labelled direct:", err)
		os.Exit(1)
	}
	raw := &rawTokens{
		header: base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"ES256","kid":"bench","typ":"JWT"}`)),
		sign: func(in []byte) []byte {
			d := sha256.Sum256(in)
			der, _ := key.Sign(rand.Reader, d[:], crypto.SHA256)
			return p256RS(der)
		},
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /sign", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		_, _ = fmt.Fprintf(w, `{"token":%q}`+"\n", raw.token(make([]byte, 16)))
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		os.Exit(1)
	}
	fmt.Fprintf(os.Stderr, `{"msg":"bare listening","addr":%q}`+"\n", ln.Addr().String())
	_ = http.Serve(ln, mux)
}
