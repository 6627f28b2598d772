package kubesigner_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	josejwt "github.com/go-jose/go-jose/v4/jwt"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	v1 "k8s.io/externaljwt/apis/v1"
	v1alpha1 "k8s.io/externaljwt/apis/v1alpha1"

	"github.com/keyd-dev/keyd/backends/file"
	"github.com/keyd-dev/keyd/keyimport"
	"github.com/keyd-dev/keyd/keystore"
	"github.com/keyd-dev/keyd/keystore/keystoretest"
	"github.com/keyd-dev/keyd/kubesigner"
	"github.com/keyd-dev/keyd/rotation"
	"github.com/keyd-dev/keyd/signer"
)

type fixture struct {
	clock  *keystoretest.Clock
	mgr    *rotation.Manager
	socket string
	v1     v1.ExternalJWTSignerClient
	alpha  v1alpha1.ExternalJWTSignerClient
}

func setup(t *testing.T, alg keystore.Algorithm) *fixture {
	t.Helper()
	c := keystoretest.NewClock(time.Now().Truncate(time.Second))
	store, err := file.Open(file.Options{Path: filepath.Join(t.TempDir(), "keyd.db"), MasterKey: make([]byte, 32)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	sg := signer.New(c.Now, nil)
	p := keystore.Policy{Name: "kube-sa", Algorithm: alg, Rotation: "@every 1h", TokenTTL: time.Hour, JWKSMaxAge: 5 * time.Minute, Leeway: time.Minute}
	mgr := rotation.NewManager(rotation.Options{Store: store, Policies: []keystore.Policy{p}, Generator: keystoretest.FastGenerator,
		Now: c.Now, Logger: slog.New(slog.DiscardHandler), Listeners: []rotation.Listener{sg}})
	if err := mgr.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	// Unix socket paths are short (108 bytes): not under t.TempDir().
	dir, err := os.MkdirTemp("", "kube")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	socket := filepath.Join(dir, "keyd.sock")
	srv, err := kubesigner.Listen(kubesigner.Options{Socket: socket, KeySet: "kube-sa", Signer: sg, Now: c.Now,
		Policy: func() (keystore.Policy, bool) { return mgr.Policy("kube-sa") },
		Ready:  func() bool { started, _ := mgr.Health(); return started }})
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve() }()
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &fixture{clock: c, mgr: mgr, socket: socket, v1: v1.NewExternalJWTSignerClient(conn), alpha: v1alpha1.NewExternalJWTSignerClient(conn)}
}

// serviceAccountClaims is what kube-apiserver puts in a token.
func serviceAccountClaims(now time.Time) string {
	c := map[string]any{
		"iss": "https://kubernetes.default.svc.cluster.local", "sub": "system:serviceaccount:billing:api",
		"aud": []string{"https://kubernetes.default.svc.cluster.local"}, "exp": now.Add(time.Hour).Unix(),
		"iat": now.Unix(), "nbf": now.Unix(), "jti": "c5e1b4d6-kube",
		"kubernetes.io": map[string]any{"namespace": "billing", "serviceaccount": map[string]string{"name": "api", "uid": "9a0f"},
			"pod": map[string]string{"name": "api-7d9", "uid": "77b1"}},
	}
	b, _ := json.Marshal(c)
	return base64.RawURLEncoding.EncodeToString(b)
}

func TestSignFetchKeysMetadataBothVersions(t *testing.T) {
	for _, alg := range []keystore.Algorithm{keystore.ES256, keystore.RS256} {
		f := setup(t, alg)
		ctx := context.Background()
		meta, err := f.v1.Metadata(ctx, &v1.MetadataRequest{})
		if err != nil || meta.MaxTokenExpirationSeconds != 3600 {
			t.Fatalf("Metadata = %v, %v", meta, err)
		}
		keys, err := f.v1.FetchKeys(ctx, &v1.FetchKeysRequest{})
		if err != nil || len(keys.Keys) != 2 || keys.RefreshHintSeconds != 300 || keys.DataTimestamp.AsTime().IsZero() {
			t.Fatalf("FetchKeys = %v, %v", keys, err)
		}
		claims := serviceAccountClaims(f.clock.Now())
		for version, sign := range map[string]func() (string, string, error){
			"v1": func() (string, string, error) {
				r, err := f.v1.Sign(ctx, &v1.SignJWTRequest{Claims: claims})
				return r.GetHeader(), r.GetSignature(), err
			},
			"v1alpha1": func() (string, string, error) {
				r, err := f.alpha.Sign(ctx, &v1alpha1.SignJWTRequest{Claims: claims})
				return r.GetHeader(), r.GetSignature(), err
			},
		} {
			header, sig, err := sign()
			if err != nil {
				t.Fatalf("%s Sign: %v", version, err)
			}
			raw, _ := base64.RawURLEncoding.DecodeString(header)
			var h map[string]any
			if json.Unmarshal(raw, &h) != nil || len(h) != 3 || h["alg"] != string(alg) || h["typ"] != "JWT" || h["kid"] == "" {
				t.Fatalf("%s header %s: must hold exactly alg, kid, typ", version, raw)
			}
			// Assembled as kube-apiserver does, verified with go-jose
			// against the PKIX key FetchKeys returned for that kid.
			token := header + "." + claims + "." + sig
			i := slices.IndexFunc(keys.Keys, func(k *v1.Key) bool { return k.KeyId == h["kid"] })
			if i < 0 {
				t.Fatalf("%s: kid %v is not among FetchKeys'", version, h["kid"])
			}
			pub, err := x509.ParsePKIXPublicKey(keys.Keys[i].Key)
			if err != nil {
				t.Fatal(err)
			}
			parsed, err := josejwt.ParseSigned(token, []jose.SignatureAlgorithm{jose.SignatureAlgorithm(alg)})
			if err != nil {
				t.Fatal(err)
			}
			var std josejwt.Claims
			var extra map[string]any
			if err := parsed.Claims(pub, &std, &extra); err != nil || std.Subject != "system:serviceaccount:billing:api" || extra["kubernetes.io"] == nil {
				t.Fatalf("%s: go-jose: %v %+v", version, err, std)
			}
		}
	}
}

func TestErrorsAndSocket(t *testing.T) {
	f := setup(t, keystore.ES256)
	ctx := context.Background()
	if _, err := f.v1.Sign(ctx, &v1.SignJWTRequest{Claims: "not base64!"}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("bad base64: %v", err)
	}
	late := map[string]any{"sub": "x", "exp": f.clock.Now().Add(2 * time.Hour).Unix()}
	b, _ := json.Marshal(late)
	if _, err := f.v1.Sign(ctx, &v1.SignJWTRequest{Claims: base64.RawURLEncoding.EncodeToString(b)}); status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "token_ttl") {
		t.Errorf("exp beyond token_ttl: %v", err)
	}
	fi, err := os.Stat(f.socket)
	if err != nil || fi.Mode().Perm() != 0o600 || fi.Mode()&os.ModeSocket == 0 {
		t.Fatalf("socket: %v %v", fi.Mode(), err)
	}
	// A second signer on the same socket fails and says why.
	_, err = kubesigner.Listen(kubesigner.Options{Socket: f.socket, KeySet: "kube-sa"})
	if err == nil || !strings.Contains(err.Error(), "another process") {
		t.Fatalf("second signer: %v", err)
	}
	// A regular file at the socket's path (a wrong kubernetes.socket) is
	// refused and kept: Listen removed whatever was there.
	regular := filepath.Join(filepath.Dir(f.socket), "keyd.yaml")
	if err := os.WriteFile(regular, []byte("precious"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := kubesigner.Listen(kubesigner.Options{Socket: regular, KeySet: "kube-sa"}); err == nil || !strings.Contains(err.Error(), "regular file") {
		t.Fatalf("a regular file at the socket path: %v", err)
	}
	if b, err := os.ReadFile(regular); err != nil || string(b) != "precious" {
		t.Fatalf("the regular file at the socket path was not kept: %q %v", b, err)
	}
	// A stale socket (a crash: nobody answers on it) is replaced.
	stale := filepath.Join(filepath.Dir(f.socket), "stale.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: stale, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	_ = ln.Close()
	s2, err := kubesigner.Listen(kubesigner.Options{Socket: stale, KeySet: "kube-sa"})
	if err != nil {
		t.Fatalf("stale socket: %v", err)
	}
	s2.Stop()
	// With a group, the group may dial too.
	grouped := filepath.Join(filepath.Dir(f.socket), "grouped.sock")
	s3, err := kubesigner.Listen(kubesigner.Options{Socket: grouped, KeySet: "kube-sa", Group: "root"})
	if err != nil {
		t.Fatal(err)
	}
	defer s3.Stop()
	if fi, err := os.Stat(grouped); err != nil || fi.Mode().Perm() != 0o660 {
		t.Fatalf("grouped socket mode: %v %v", fi.Mode(), err)
	}
	if _, err := kubesigner.Listen(kubesigner.Options{Socket: filepath.Join(filepath.Dir(f.socket), "x.sock"), KeySet: "kube-sa", Group: "no-such-group-keyd"}); err == nil || !strings.Contains(err.Error(), "kubernetes.group") {
		t.Fatalf("unknown group: %v", err)
	}
}

// TestRotationReachesTheAPIServerFirst: a new key is offered by FetchKeys
// at least the refresh hint before Sign uses it, old keys stay until their
// grace ends, and a revoked kid disappears at once.
func TestRotationReachesTheAPIServerFirst(t *testing.T) {
	f := setup(t, keystore.ES256)
	ctx := context.Background()
	kidsOf := func() []string {
		r, err := f.v1.FetchKeys(ctx, &v1.FetchKeysRequest{})
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, k := range r.Keys {
			out = append(out, k.KeyId)
		}
		return out
	}
	signingKid := func() string {
		r, err := f.v1.Sign(ctx, &v1.SignJWTRequest{Claims: serviceAccountClaims(f.clock.Now())})
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := base64.RawURLEncoding.DecodeString(r.Header)
		var h struct{ KID string }
		_ = json.Unmarshal(raw, &h)
		return h.KID
	}
	ks, _, _ := f.mgr.KeySet("kube-sa")
	pending, _ := ks.Pending()
	firstSeen := f.clock.Now() // the pending key is offered from the start
	if !slices.Contains(kidsOf(), pending.ID) {
		t.Fatal("the pending key is not offered")
	}
	oldKid := signingKid()
	for i := range 4 { // the scheduler's ticks, an hour apart
		f.clock.Add(time.Hour)
		if _, err := f.mgr.Tick(ctx, "kube-sa"); err != nil {
			t.Fatal(err)
		}
		kid := signingKid()
		if i == 0 {
			if kid != pending.ID {
				t.Fatalf("after the first rotation signs with %s, want %s", kid, pending.ID)
			}
			if f.clock.Now().Sub(firstSeen) < 300*time.Second {
				t.Fatal("a key signed before it was offered for the refresh hint")
			}
			if !slices.Contains(kidsOf(), oldKid) {
				t.Fatal("the retired key left FetchKeys within its grace")
			}
		}
	}
	if slices.Contains(kidsOf(), oldKid) {
		t.Fatal("the retired key is still offered long after its grace")
	}
	// Revocation removes a kid at once.
	ks, _, _ = f.mgr.KeySet("kube-sa")
	p, _ := ks.Pending()
	if _, err := f.mgr.Revoke(ctx, "kube-sa", p.ID); err != nil {
		t.Fatal(err)
	}
	if slices.Contains(kidsOf(), p.ID) {
		t.Fatal("a revoked kid is still offered")
	}
}

// The review's attack: claims decoded into a struct matched names
// case-insensitively, so the lifetime cap and the audit read "Exp", "SUB"
// and "JTI" while every verifier reads "exp", "sub" and "jti". Such claims
// segments are refused over the real socket, and so are duplicates and
// invalid UTF-8.
func TestCaseVariantAndDuplicateClaimsRefused(t *testing.T) {
	f := setup(t, keystore.ES256)
	ctx := context.Background()
	now := f.clock.Now()
	far, soon := now.Add(1000*time.Hour).Unix(), now.Add(10*time.Minute).Unix()
	for name, claims := range map[string]string{
		"Exp beside exp":  fmt.Sprintf(`{"exp": %d, "Exp": %d, "SUB": "innocent", "JTI": "x"}`, far, soon),
		"EXP alone":       fmt.Sprintf(`{"EXP": %d, "sub": "a"}`, soon),
		"exp twice":       fmt.Sprintf(`{"exp": %d, "exp": %d}`, far, soon),
		"sub twice":       fmt.Sprintf(`{"exp": %d, "sub": "a", "sub": "b"}`, soon),
		"nested twice":    fmt.Sprintf(`{"exp": %d, "act": {"sub": "a", "sub": "b"}}`, soon),
		"no exp":          `{"sub": "a"}`,
		"exp not integer": fmt.Sprintf(`{"exp": "%d"}`, soon),
		"invalid UTF-8":   fmt.Sprintf("{\"exp\": %d, \"sub\": \"\xff\xfe\"}", soon),
		"trailing data":   fmt.Sprintf(`{"exp": %d} {"exp": %d}`, soon, far),
		"jti too long":    fmt.Sprintf(`{"exp": %d, "jti": "%s"}`, soon, strings.Repeat("j", 300)),
	} {
		seg := base64.RawURLEncoding.EncodeToString([]byte(claims))
		_, err := f.v1.Sign(ctx, &v1.SignJWTRequest{Claims: seg})
		if status.Code(err) != codes.InvalidArgument {
			t.Errorf("%s: signed or wrong error: %v", name, err)
		}
	}
	// Exact names still sign.
	seg := base64.RawURLEncoding.EncodeToString([]byte(fmt.Sprintf(`{"exp": %d, "sub": "a", "jti": "j"}`, soon)))
	if _, err := f.v1.Sign(ctx, &v1.SignJWTRequest{Claims: seg}); err != nil {
		t.Fatalf("plain claims: %v", err)
	}
}

// Moving a cluster to keyd: the old sa.pub imported verify-only, with the
// kid kube-apiserver gave its tokens (base64url of the SHA-256 of the PKIX
// key), is among FetchKeys' keys, so tokens the old sa.key signed still
// verify after the switch.
func TestImportedSAKeyIsFetched(t *testing.T) {
	f := setup(t, keystore.RS256)
	ctx := context.Background()
	old, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKIXPublicKey(&old.PublicKey)
	sum := sha256.Sum256(der)
	kid := base64.RawURLEncoding.EncodeToString(sum[:]) // as kube-apiserver computes it
	keys, _, err := keyimport.Parse(keystore.RS256, keyimport.Input{PEM: pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), KID: kid,
		VerifyUntil: f.clock.Now().Add(24 * time.Hour)}, f.clock.Now())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.mgr.Import(ctx, "kube-sa", keys, keystore.StateRetired, false); err != nil {
		t.Fatal(err)
	}
	fetched, err := f.v1.FetchKeys(ctx, &v1.FetchKeysRequest{})
	if err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(fetched.Keys, func(k *v1.Key) bool { return k.KeyId == kid })
	if i < 0 || len(fetched.Keys) != 3 {
		t.Fatalf("FetchKeys: %d keys, the imported one at %d", len(fetched.Keys), i)
	}
	// A token of the old sa.key, verified with the key FetchKeys gave.
	sig, _ := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: old}, (&jose.SignerOptions{}).WithHeader("kid", kid))
	tok, _ := josejwt.Signed(sig).Claims(josejwt.Claims{Subject: "system:serviceaccount:default:legacy", Expiry: josejwt.NewNumericDate(f.clock.Now().Add(time.Hour))}).Serialize()
	pub, err := x509.ParsePKIXPublicKey(fetched.Keys[i].Key)
	if err != nil {
		t.Fatal(err)
	}
	parsed, _ := josejwt.ParseSigned(tok, []jose.SignatureAlgorithm{jose.RS256})
	var c josejwt.Claims
	if err := parsed.Claims(pub, &c); err != nil || c.Subject != "system:serviceaccount:default:legacy" {
		t.Fatalf("the old token with the fetched key: %v", err)
	}
}
