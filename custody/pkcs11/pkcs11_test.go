//go:build pkcs11

package pkcs11_test

import (
	"context"
	"crypto"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keyd-dev/keyd/backends/file"
	"github.com/keyd-dev/keyd/custody/custodytest"
	"github.com/keyd-dev/keyd/custody/pkcs11"
	"github.com/keyd-dev/keyd/internal/testhsm"
	"github.com/keyd-dev/keyd/keystore"
	"github.com/keyd-dev/keyd/rotation"
)

func open(t *testing.T) keystore.Custody {
	tok := testhsm.New(t)
	return openToken(t, tok.Label, tok.PIN)
}

const Module = testhsm.Module

// openToken opens the token, and closes it when the test ends: SoftHSM
// reads SOFTHSM2_CONF when the module is initialised, so the next test's
// token is seen only after this one's finalised it.
func openToken(t *testing.T, label, pin string) keystore.Custody {
	t.Helper()
	c, err := pkcs11.Open(pkcs11.Config{Module: Module, TokenLabel: label, PIN: pin})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.(io.Closer).Close() })
	return c
}

// The suite on a real SoftHSM token: ES256/384/512, RS256 and PS256
// (the salt as long as the hash) sign through keyd's signer and go-jose
// verifies them; a destroyed key signs no more.
func TestConformance(t *testing.T) {
	custodytest.Run(t, open(t), []keystore.Algorithm{keystore.ES256, keystore.ES384, keystore.ES512, keystore.RS256, keystore.PS256, keystore.HS256, keystore.HS512})
}

// From outside keyd, with pkcs11-tool: the private key keyd made is
// sensitive and never extractable, and reading it is refused.
func TestKeysNeverLeaveTheToken(t *testing.T) {
	tok := testhsm.New(t)
	label, pin := tok.Label, tok.PIN
	c := openToken(t, label, pin)
	ref, _, err := c.Create(context.Background(), "app", keystore.ES256, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := hex.DecodeString(ref); err != nil {
		t.Fatalf("reference %q", ref)
	}
	out, _ := exec.Command("pkcs11-tool", "--module", Module, "--token-label", label, "--login", "--pin", pin, "--list-objects", "--type", "privkey", "--id", ref).CombinedOutput()
	if !strings.Contains(string(out), "sensitive") || !strings.Contains(string(out), "never extractable") || !strings.Contains(string(out), "keyd-app-"+ref) {
		t.Fatalf("the private key's attributes:\n%s", out)
	}
	// pkcs11-tool refuses (the token would refuse CKA_VALUE of a
	// sensitive key anyway): nothing of the key comes out.
	out, _ = exec.Command("pkcs11-tool", "--module", Module, "--token-label", label, "--login", "--pin", pin, "--read-object", "--type", "privkey", "--id", ref).CombinedOutput()
	if !strings.Contains(string(out), "not") || strings.Contains(string(out), "PRIVATE KEY") || len(out) > 200 {
		t.Fatalf("pkcs11-tool --read-object of the private key:\n%s", out)
	}
}

// Wrong PIN, unknown token, missing module: refused at open, saying which,
// never showing the PIN.
func TestOpenErrors(t *testing.T) {
	label := testhsm.New(t).Label
	for _, c := range []struct {
		cfg  pkcs11.Config
		want string
	}{
		{pkcs11.Config{Module: Module, TokenLabel: label, PIN: "9999"}, "PIN"},
		{pkcs11.Config{Module: Module, TokenLabel: "nope", PIN: "1234"}, `no token labelled "nope"`},
		{pkcs11.Config{Module: "/nonexistent/libpkcs11.so", TokenLabel: label, PIN: "4321"}, "/nonexistent/libpkcs11.so"},
	} {
		_, err := pkcs11.Open(c.cfg)
		if err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), c.cfg.PIN) {
			t.Errorf("%+v: %v (want %q, never the PIN)", c.cfg, err, c.want)
		}
	}
}

// The lifecycle with keys in the token, on an injected clock: the hourly
// rotation makes a key pair in the token; a retired key's pair is deleted
// when its grace ends, not before.
func TestLifecycleDeletesTokenKeys(t *testing.T) {
	tok := testhsm.New(t)
	c := openToken(t, tok.Label, tok.PIN)
	ctx := context.Background()
	store, err := file.Open(file.Options{Path: filepath.Join(t.TempDir(), "keyd.db"), MasterKey: make([]byte, 32)})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	now := time.Date(2026, 11, 2, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	p := keystore.Policy{Name: "app", Algorithm: keystore.ES256, Rotation: "0 * * * *", TokenTTL: 15 * time.Minute, JWKSMaxAge: 5 * time.Minute, Leeway: time.Minute, Custody: c}
	m := rotation.NewManager(rotation.Options{Store: store, Policies: []keystore.Policy{p}, Now: clock})
	if err := m.Start(ctx); err != nil {
		t.Fatal(err)
	}
	pairs := func() int {
		return strings.Count(tok.Tool(t, "--list-objects", "--type", "privkey"), "Private Key Object")
	}
	if n := pairs(); n != 2 {
		t.Fatalf("%d pairs after the start", n)
	}
	ks, _, _ := m.KeySet("app")
	first, _ := ks.Active()
	now = now.Add(time.Hour)
	if _, err := m.Tick(ctx, "app"); err != nil {
		t.Fatal(err)
	}
	if n := pairs(); n != 3 {
		t.Fatalf("%d pairs after the rotation", n)
	}
	now = now.Add(p.Grace() - time.Minute)
	if _, err := m.Tick(ctx, "app"); err != nil {
		t.Fatal(err)
	}
	if n := pairs(); n != 3 {
		t.Fatalf("%d pairs before the grace ended", n)
	}
	now = now.Add(2 * time.Minute)
	if _, err := m.Tick(ctx, "app"); err != nil {
		t.Fatal(err)
	}
	if n := pairs(); n != 2 || strings.Contains(tok.Tool(t, "--list-objects", "--type", "privkey"), first.Ref()) {
		t.Fatalf("after the grace: %d pairs\n%s", n, tok.Tool(t, "--list-objects", "--type", "privkey"))
	}
}

// The objects the token holds for a key set, pairs and secrets alike, are
// listed (orphans are reported at start).
func TestObjects(t *testing.T) {
	tok := testhsm.New(t)
	c := openToken(t, tok.Label, tok.PIN)
	ctx := context.Background()
	a, _, err := c.Create(ctx, "app", keystore.ES256, 0)
	if err != nil {
		t.Fatal(err)
	}
	b, _, err := c.Create(ctx, "app", keystore.HS256, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.Create(ctx, "other", keystore.ES256, 0); err != nil {
		t.Fatal(err)
	}
	objs, err := c.(keystore.CustodyLister).Objects(ctx, "app")
	if err != nil || len(objs) != 2 {
		t.Fatalf("objects of app: %v %v", objs, err)
	}
	for _, o := range objs {
		if o.Ref != a && o.Ref != b {
			t.Fatalf("object %s is not app's", o.Ref)
		}
	}
}

// The token's folder moved away (the token gone: an HSM's network blip)
// and back: signing answers custody_unavailable meanwhile, and signs again
// within seconds of the token's return, with no restart. It answered 503
// until keyd restarted.
func TestTokenThatComesBackSignsAgain(t *testing.T) {
	tok := testhsm.New(t)
	c := openToken(t, tok.Label, tok.PIN)
	ref, pub, err := c.Create(context.Background(), "app", keystore.ES256, 0)
	if err != nil {
		t.Fatal(err)
	}
	s, err := c.Signer(ref, pub)
	if err != nil {
		t.Fatal(err)
	}
	m, err := func() (keystore.MAC, error) {
		hmacRef, _, err := c.Create(context.Background(), "app", keystore.HS256, 0)
		if err != nil {
			return nil, err
		}
		return c.(keystore.CustodyMACer).MAC(hmacRef, keystore.HS256)
	}()
	if err != nil {
		t.Fatal(err)
	}
	digest := sha256.Sum256([]byte("x"))
	sign := func() error {
		if _, err := s.Sign(nil, digest[:], crypto.SHA256); err != nil {
			return err
		}
		_, err := m.Sum([]byte("x"))
		return err
	}
	if err := sign(); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(filepath.Dir(tok.Conf), "tokens")
	if err := os.Rename(dir, dir+".away"); err != nil {
		t.Fatal(err)
	}
	gone := false
	for range 20 { // the open sessions may answer a while: until they do not
		if err := sign(); err != nil {
			if !errors.Is(err, keystore.ErrCustodyUnavailable) {
				t.Fatalf("with the token gone: %v, want custody unavailable", err)
			}
			gone = true
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !gone {
		t.Fatal("signing went on with the token's folder gone")
	}
	if err := os.Rename(dir+".away", dir); err != nil {
		t.Fatal(err)
	}
	back := time.Now()
	for {
		err := sign()
		if err == nil {
			t.Logf("signing again %v after the token's return", time.Since(back).Round(time.Millisecond))
			return
		}
		if time.Since(back) > 10*time.Second {
			t.Fatalf("10s after the token's return, signing still fails: %v", err)
		}
		time.Sleep(100 * time.Millisecond) // polling the real token, not waiting for time to pass
	}
}

// The wrapper suite on a real SoftHSM token: two AES keys made by Ensure,
// sensitive and never extractable.
func TestWrapperConformance(t *testing.T) {
	tok := testhsm.New(t)
	cfg := pkcs11.Config{Module: Module, TokenLabel: tok.Label, PIN: tok.PIN}
	ctx := context.Background()
	var ws []pkcs11.KeyWrapper
	for _, label := range []string{"keyd-master", "keyd-other"} {
		w, err := pkcs11.OpenWrapper(cfg, label)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = w.Close() })
		if _, err := w.Unwrap(ctx, []byte{1, 2, 3}); err == nil || !strings.Contains(err.Error(), "master-key new") {
			t.Fatalf("no key yet: %v", err)
		}
		if created, err := w.Ensure(ctx); err != nil || !created {
			t.Fatalf("Ensure = %v, %v", created, err)
		}
		if created, err := w.Ensure(ctx); err != nil || created {
			t.Fatalf("Ensure again = %v, %v; want the key kept", created, err)
		}
		ws = append(ws, w)
	}
	custodytest.RunWrapper(t, ws[0], ws[1])
	out := tok.Tool(t, "--list-objects", "--type", "secrkey")
	if !strings.Contains(out, "keyd-master") || !strings.Contains(out, "never extractable") || !strings.Contains(out, "sensitive") {
		t.Fatalf("the wrapping key's attributes:\n%s", out)
	}
}
