package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"filippo.io/age"

	"github.com/keyd-dev/keyd/backends/file"
	"github.com/keyd-dev/keyd/internal/config"
)

// backupAtScale measures a backup of a keyd on bbolt holding nSets key
// sets, n revocations and n refresh logins (POST /v1/backup: its time and
// keyd's peak RSS while it runs), signing throughput alone and while a
// backup runs (the ratio is the backup's cost to signing), and `keyd
// restore` of that backup into an empty bbolt (its time and peak RSS).
func backupAtScale(dir string, nSets, n int) error {
	sub := filepath.Join(dir, "backup")
	if err := os.MkdirAll(sub, 0o700); err != nil {
		return err
	}
	cfg := backupConfig(sub, nSets)
	fmt.Printf("\nBackup and restore: %d key sets, %d revocations, %d logins, bbolt\n", nSets, n, n)
	t0 := time.Now()
	p, err := startKeyd(sub, cfg) // creates the key sets
	if err != nil {
		return err
	}
	p.stop()
	if err := fill(sub, "", n); err != nil {
		return err
	}
	if err := fillBoltLogins(sub, n); err != nil {
		return err
	}
	fmt.Printf("  filled in %v\n", time.Since(t0).Round(time.Second))
	if p, err = startKeyd(sub, cfg); err != nil {
		return err
	}
	defer p.stop()
	id, err := age.GenerateX25519Identity()
	if err != nil {
		return err
	}
	req, _ := json.Marshal(map[string]any{"recipients": []string{id.Recipient().String()}})
	out := filepath.Join(sub, "keyd.backup")
	rssBefore := p.rss()
	_ = os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", p.cmd.Process.Pid), []byte("5"), 0) // peak RSS from here
	t0 = time.Now()
	sampled := make(chan int64)
	stopSampling := make(chan struct{})
	go func() { // keyd's own (anonymous) pages at their peak: RSS less the mapped database file
		var peak int64
		for {
			peak = max(peak, p.rssAnon())
			select {
			case <-stopSampling:
				sampled <- peak
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	size, err := postBackup(p, req, out)
	close(stopSampling)
	anonPeak := <-sampled
	if err != nil {
		return err
	}
	took := time.Since(t0)
	fmt.Printf("  backup (POST /v1/backup): %v, %d MiB file; keyd RSS %d MiB before, peak %d MiB during (of which its own pages %d MiB, the rest the mapped database file), %d MiB after\n",
		took.Round(time.Millisecond), size>>20, rssBefore>>20, p.status("VmHWM:")>>20, anonPeak>>20, p.rss()>>20)

	body := []byte(`{"claims":{"sub":"alice"}}`)
	alone := load(p, "POST", "/v1/keysets/app/sign", body, 1)
	stop, done := make(chan struct{}), make(chan error, 1)
	backups := 0
	go func() { // backups back to back for as long as signing is measured
		for {
			if _, err := postBackup(p, req, filepath.Join(sub, "again.backup")); err != nil {
				done <- err
				return
			}
			select {
			case <-stop:
				done <- nil
				return
			default:
				backups++
			}
		}
	}()
	during := load(p, "POST", "/v1/keysets/app/sign", body, 1)
	close(stop)
	if err := <-done; err != nil {
		return err
	}
	fmt.Printf("  signing ES256 alone %.0f tok/s, while backups run back to back %.0f tok/s (ratio %.2f; %d backups finished meanwhile)\n", alone.perSec, during.perSec, during.perSec/alone.perSec, backups)
	p.stop()
	return timeRestore(sub, nSets, id, out)
}

// timeRestore runs keyd restore of the backup into an empty bbolt.
func timeRestore(sub string, nSets int, id *age.X25519Identity, backupFile string) error {
	target := filepath.Join(sub, "restored")
	if err := os.MkdirAll(target, 0o700); err != nil {
		return err
	}
	cfgPath := filepath.Join(target, "keyd.yaml")
	if err := os.WriteFile(cfgPath, []byte(backupConfig(target, nSets)), 0o600); err != nil {
		return err
	}
	idPath := filepath.Join(target, "backup.key")
	if err := os.WriteFile(idPath, []byte(id.String()+"\n"), 0o600); err != nil {
		return err
	}
	cmd := exec.Command(*keydBin, "restore", "--config", cfgPath, "--identity", idPath, backupFile)
	cmd.Env = append(os.Environ(), "KEYD_MASTER_KEY="+masterKey)
	var outb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &outb, &outb
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		return err
	}
	child := &proc{cmd: cmd}
	var anonPeak int64
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	for waiting := true; waiting; {
		select {
		case err := <-done:
			if err != nil {
				return fmt.Errorf("keyd restore: %w\n%s", err, outb.String())
			}
			waiting = false
		case <-time.After(20 * time.Millisecond):
			anonPeak = max(anonPeak, child.rssAnon())
		}
	}
	ru := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	fmt.Printf("  restore (keyd restore into an empty bbolt): %v, peak RSS %d MiB (of which its own pages %d MiB, the rest the mapped database file)\n",
		time.Since(t0).Round(time.Millisecond), ru.Maxrss>>10, anonPeak>>20)
	return nil
}

func postBackup(p *proc, req []byte, path string) (int64, error) {
	r, _ := http.NewRequestWithContext(context.Background(), "POST", p.addr+"/v1/backup", bytes.NewReader(req))
	r.Header.Set("Authorization", "Bearer "+token)
	resp, err := (&http.Client{}).Do(r)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		msg, _ := io.ReadAll(resp.Body)
		return 0, fmt.Errorf("backup: HTTP %d %s", resp.StatusCode, msg)
	}
	f, err := os.Create(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	return io.Copy(f, resp.Body)
}

func backupConfig(dir string, nSets int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "listen: 127.0.0.1:0\nstorage: {backend: file, file: {path: %q}}\nkeysets:\n", filepath.Join(dir, "keyd.db"))
	fmt.Fprintf(&b, "  - {name: app, algorithm: ES256, rotation: \"@daily\", token_ttl: 1h, jwks_max_age: 5m, max_revocations: 10000000, refresh: {ttl: 24h}}\n")
	for i := 1; i < nSets; i++ {
		fmt.Fprintf(&b, "  - {name: ks%04d, algorithm: ES256, rotation: \"@daily\", token_ttl: 15m, jwks_max_age: 5m}\n", i)
	}
	fmt.Fprintf(&b, "auth:\n  tokens:\n    - {name: bench, sha256: %q, scopes: [admin, \"sign:*\", \"verify:*\"]}\n", config.TokenHash(token))
	return b.String()
}

// fillBoltLogins writes n refresh logins into the bbolt store of dir.
func fillBoltLogins(dir string, n int) error {
	key, _ := base64.StdEncoding.DecodeString(masterKey)
	s, err := file.Open(file.Options{Path: filepath.Join(dir, "keyd.db"), MasterKey: key})
	if err != nil {
		return err
	}
	defer s.Close()
	return writeLogins(s, n)
}
