//go:build pkcs11

package main

import (
	"crypto"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/ThalesGroup/crypto11"

	"github.com/keyd-dev/keyd/internal/daemon"
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

	cfg := fmt.Sprintf(`listen: 127.0.0.1:0
storage: {backend: file, file: {path: %q}}
keysets:
  - {name: app, algorithm: ES256, rotation: "@daily", token_ttl: 15m, jwks_max_age: 5m, custody: {type: pkcs11, module: %q, token_label: bench}}
auth:
  tokens:
    - {name: bench, sha256: %q, scopes: [admin, "sign:*"]}
`, filepath.Join(sub, "keyd.db"), softhsm, daemon.TokenHash(token))
	k, err := startKeydEnv(sub, cfg, []string{"SOFTHSM2_CONF=" + conf, "KEYD_PKCS11_PIN=1234"})
	if err != nil {
		return fmt.Errorf("keyd with PKCS#11 custody (is --keyd built with -tags pkcs11?): %w", err)
	}
	defer k.stop()
	r := load(k, "POST", "/v1/keysets/app/sign", body, 1)
	fmt.Printf("\nES256 with the key in a SoftHSM token, %d concurrent signers:\n", *conns)
	fmt.Printf("  crypto11's own loop:   %8.0f signatures/s, %.1f µs CPU each\n", direct, directCPU)
	fmt.Printf("  keyd /sign through it: %8.0f tokens/s, p99 %s, %.1f µs CPU per token (%.2f of the loop)\n", r.perSec, r.p99, r.cpuPer, r.perSec/direct)
	return nil
}

func selfCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
