package vault_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	vaultapi "github.com/hashicorp/vault/api"

	"github.com/keyd-dev/keyd/backends/vault"
	"github.com/keyd-dev/keyd/internal/testkube"
	"github.com/keyd-dev/keyd/internal/testvault"
	"github.com/keyd-dev/keyd/keystore"
	"github.com/keyd-dev/keyd/keystore/keystoretest"
	"github.com/keyd-dev/keyd/tokenstate"
	"github.com/keyd-dev/keyd/tokenstate/records"
	"github.com/keyd-dev/keyd/tokenstate/tokenstatetest"
)

var prefixes atomic.Int64

func open(t *testing.T, srv *testvault.Server, timeout time.Duration) *vault.Store {
	s, _ := openAt(t, srv, timeout)
	return s
}

// openAt opens a store under a fresh prefix, so every test starts empty.
func openAt(t *testing.T, srv *testvault.Server, timeout time.Duration) (*vault.Store, string) {
	t.Helper()
	prefix := fmt.Sprintf("keyd-test/%d", prefixes.Add(1))
	s, err := vault.Open(vault.Options{
		Address: srv.Addr, Token: testvault.RootToken, Mount: "secret", Prefix: prefix,
		Timeout: timeout, Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	return s, prefix
}

func TestConformance(t *testing.T) {
	srv := testvault.Start(t)
	keystoretest.Run(t, func(t *testing.T) keystore.Store { return open(t, srv, 0) })
}

func TestRecordConformance(t *testing.T) {
	srv := testvault.Start(t)
	keystoretest.RunRecords(t, func(t *testing.T) keystore.RecordStore {
		s := open(t, srv, 0)
		t.Cleanup(func() { _ = s.Close() })
		return s
	})
}

// Revocations as records of their own, on a real OpenBao.
func TestTokenStateConformance(t *testing.T) {
	srv := testvault.Start(t)
	tokenstatetest.Run(t, func(t *testing.T) tokenstate.Store {
		s := open(t, srv, 0)
		t.Cleanup(func() { _ = s.Close() })
		return records.New(s)
	})
}

func TestMetadataRequiresCASAndKeepsOneVersion(t *testing.T) {
	srv := testvault.Start(t)
	s, prefix := openAt(t, srv, 0)
	defer s.Close()
	ctx := context.Background()
	ks, err := s.Put(ctx, keystoretest.KeySet(t, "meta", keystore.ES256))
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		next, _ := keystore.Rotate(ks, keystoretest.NewKey(t, keystore.ES256), time.Now())
		next.Version = ks.Version
		if ks, err = s.Put(ctx, next); err != nil {
			t.Fatal(err)
		}
	}
	client := srv.RootClient(t)
	meta, err := client.KVv2("secret").GetMetadata(ctx, prefix+"/meta")
	if err != nil {
		t.Fatal(err)
	}
	if !meta.CASRequired || meta.MaxVersions != 1 || len(meta.Versions) != 1 || meta.CurrentVersion != int(ks.Version) {
		t.Fatalf("metadata: cas_required=%v max_versions=%d versions=%d current=%d (want %d)",
			meta.CASRequired, meta.MaxVersions, len(meta.Versions), meta.CurrentVersion, ks.Version)
	}
}

func TestOutageIsUnavailableAndRecovers(t *testing.T) {
	srv := testvault.Start(t)
	s := open(t, srv, 500*time.Millisecond)
	defer s.Close()
	ctx := context.Background()
	if _, err := s.Put(ctx, keystoretest.KeySet(t, "out", keystore.EdDSA)); err != nil {
		t.Fatal(err)
	}
	if err := srv.Freeze(); err != nil {
		t.Fatal(err)
	}
	_, err := s.Get(ctx, "out")
	if !errors.Is(err, keystore.ErrUnavailable) {
		t.Fatalf("Get during an outage = %v, want ErrUnavailable", err)
	}
	if err := srv.Thaw(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, "out"); err != nil {
		t.Fatalf("Get after the outage: %v", err)
	}
}

func TestBadTokenIsUnavailableWithReason(t *testing.T) {
	srv := testvault.Start(t)
	s, err := vault.Open(vault.Options{Address: srv.Addr, Token: "wrong", Mount: "secret", Prefix: "keyd-test/bad", Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	_, err = s.List(context.Background())
	if !errors.Is(err, keystore.ErrUnavailable) {
		t.Fatalf("List with a bad token = %v", err)
	}
}

func writePolicy(t *testing.T, c *vaultapi.Client) {
	t.Helper()
	policy, err := os.ReadFile("../../configs/vault-policy.hcl")
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Sys().PutPolicy("keyd", string(policy)); err != nil {
		t.Fatal(err)
	}
}

// The policy the README gives is enough for everything keyd does, and a
// renewable token limited to it is renewed.
func TestLeastPrivilegePolicy(t *testing.T) {
	srv := testvault.Start(t)
	root := srv.RootClient(t)
	writePolicy(t, root)
	tok, err := root.Auth().Token().Create(&vaultapi.TokenCreateRequest{Policies: []string{"keyd"}, TTL: "1h", NoDefaultPolicy: true})
	if err != nil {
		t.Fatal(err)
	}
	open := func() keystore.Store {
		s, err := vault.Open(vault.Options{Address: srv.Addr, Token: tok.Auth.ClientToken, Mount: "secret", Prefix: "keyd", Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	s := open()
	defer s.Close()
	ctx := context.Background()
	ks, err := s.Put(ctx, keystoretest.KeySet(t, "default", keystore.ES256))
	if err != nil {
		t.Fatalf("create under the policy: %v", err)
	}
	next, _ := keystore.Rotate(ks, keystoretest.NewKey(t, keystore.ES256), time.Now())
	next.Version = ks.Version
	if _, err := s.Put(ctx, next); err != nil {
		t.Fatalf("update under the policy: %v", err)
	}
	if sets, err := s.List(ctx); err != nil || len(sets) != 1 {
		t.Fatalf("list under the policy: %v %v", sets, err)
	}
	rs := s.(keystore.RecordStore)
	r, err := rs.PutRecord(ctx, "refresh", &keystore.Record{ID: "fam", Data: []byte("x")})
	if err != nil {
		t.Fatalf("record create under the policy: %v", err)
	}
	if _, err := rs.PutRecord(ctx, "refresh", &keystore.Record{ID: "fam", Data: []byte("y"), Version: r.Version}); err != nil {
		t.Fatalf("record update under the policy: %v", err)
	}
	if list, err := rs.ListRecords(ctx, "refresh"); err != nil || len(list) != 1 {
		t.Fatalf("record list under the policy: %v %v", list, err)
	}
	if err := rs.DeleteRecord(ctx, "refresh", "fam"); err != nil {
		t.Fatalf("record delete under the policy: %v", err)
	}
	meta, err := root.KVv2("secret").GetMetadata(ctx, "keyd/default")
	if err != nil || !meta.CASRequired || meta.MaxVersions != 1 {
		t.Fatalf("metadata not set under the policy: %+v %v", meta, err)
	}
	// Outside its prefix the token can do nothing.
	other, err := vault.Open(vault.Options{Address: srv.Addr, Token: tok.Auth.ClientToken, Mount: "secret", Prefix: "other", Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if _, err := other.Put(ctx, keystoretest.KeySet(t, "x", keystore.ES256)); !errors.Is(err, keystore.ErrUnavailable) || !strings.Contains(err.Error(), "permission denied") {
		t.Fatalf("write outside the policy = %v", err)
	}
}

func TestAppRoleLogin(t *testing.T) {
	srv := testvault.Start(t)
	root := srv.RootClient(t)
	writePolicy(t, root)
	if err := root.Sys().EnableAuthWithOptions("approle", &vaultapi.EnableAuthOptions{Type: "approle"}); err != nil {
		t.Fatal(err)
	}
	if _, err := root.Logical().Write("auth/approle/role/keyd", map[string]any{"token_policies": "keyd", "token_ttl": "1h"}); err != nil {
		t.Fatal(err)
	}
	roleID, err := root.Logical().Read("auth/approle/role/keyd/role-id")
	if err != nil {
		t.Fatal(err)
	}
	secretID, err := root.Logical().Write("auth/approle/role/keyd/secret-id", nil)
	if err != nil {
		t.Fatal(err)
	}
	secretFile := filepath.Join(t.TempDir(), "secret-id")
	if err := os.WriteFile(secretFile, []byte(secretID.Data["secret_id"].(string)), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := vault.Open(vault.Options{
		Address: srv.Addr, Mount: "secret", Prefix: "keyd", Logger: slog.New(slog.DiscardHandler),
		RoleID: roleID.Data["role_id"].(string), SecretIDFile: secretFile,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	// The login happens in the background: wait for it (a real login over
	// loopback, not time passing).
	ctx := context.Background()
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err = s.Put(ctx, keystoretest.KeySet(t, "approle", keystore.EdDSA))
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("write after AppRole login: %v", err)
	}
}

// A short-lived renewable token keeps working past its TTL because keyd
// renews it. This runs against Vault's real clock for a few seconds.
func TestTokenIsRenewed(t *testing.T) {
	if testing.Short() {
		t.Skip("needs a few seconds of real time")
	}
	srv := testvault.Start(t)
	root := srv.RootClient(t)
	writePolicy(t, root)
	tok, err := root.Auth().Token().Create(&vaultapi.TokenCreateRequest{
		Policies: []string{"keyd"}, TTL: "2s", ExplicitMaxTTL: "1h", NoDefaultPolicy: true, Renewable: new(true),
	})
	if err != nil {
		t.Fatal(err)
	}
	s, err := vault.Open(vault.Options{Address: srv.Addr, Token: tok.Auth.ClientToken, Mount: "secret", Prefix: "keyd", Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	if _, err := s.Put(ctx, keystoretest.KeySet(t, "renew", keystore.ES256)); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	for time.Since(start) < 5*time.Second { // two and a half TTLs of reads
		if _, err := s.Get(ctx, "renew"); err != nil {
			t.Fatalf("read %v after start with a 2s token: %v", time.Since(start), err)
		}
		time.Sleep(100 * time.Millisecond) // pacing reads while Vault's clock runs
	}
}

// Kubernetes auth, end to end: a real kube-apiserver issues keyd's service
// account token (TokenRequest, audience "vault", as a projected volume
// would hold it); OpenBao's kubernetes auth checks it with the API
// server's TokenReview and gives a token under the README's policy; the
// store works with it. A token of another service account is refused.
func TestKubernetesLogin(t *testing.T) {
	kube := testkube.Start(t, testkube.Options{})
	srv := testvault.Start(t)
	root := srv.RootClient(t)
	writePolicy(t, root)
	if err := root.Sys().EnableAuthWithOptions("kubernetes", &vaultapi.EnableAuthOptions{Type: "kubernetes"}); err != nil {
		t.Fatal(err)
	}
	// The reviewer: a cluster identity allowed to create TokenReviews.
	if _, err := root.Logical().Write("auth/kubernetes/config", map[string]any{
		"kubernetes_host": kube.URL, "kubernetes_ca_cert": string(kube.CACert(t)), "token_reviewer_jwt": kube.Token,
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := root.Logical().Write("auth/kubernetes/role/keyd", map[string]any{
		"bound_service_account_names": "keyd", "bound_service_account_namespaces": "keyd", "audience": "vault",
		"token_policies": "keyd", "token_ttl": "1h",
	}); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	tokenFile := func(namespace, name string) string {
		p := filepath.Join(dir, namespace+"-"+name)
		if err := os.WriteFile(p, []byte(kube.ServiceAccountToken(t, namespace, name, "vault")), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := vault.Open(vault.Options{Address: srv.Addr, Mount: "secret", Prefix: "keyd", KubernetesRole: "keyd",
		KubernetesTokenFile: tokenFile("keyd", "keyd"), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var ks *keystore.KeySet
	for ks == nil { // the login runs in the background
		if ks, err = s.Put(ctx, keystoretest.KeySet(t, "default", keystore.ES256)); err != nil && ctx.Err() != nil {
			t.Fatalf("put with the Kubernetes login: %v", err)
		}
	}
	if got, err := s.Get(ctx, "default"); err != nil || got.Version != ks.Version {
		t.Fatalf("get with the Kubernetes login: %v", err)
	}
	// Another service account is not bound to the role.
	other, err := vault.Open(vault.Options{Address: srv.Addr, Mount: "secret", Prefix: "keyd", KubernetesRole: "keyd",
		KubernetesTokenFile: tokenFile("keyd", "intruder"), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	short, cancelShort := context.WithTimeout(ctx, 3*time.Second)
	defer cancelShort()
	for {
		_, err := other.Get(short, "default")
		if err != nil && strings.Contains(err.Error(), "vault login") {
			break // refused, and said so
		}
		if err == nil || short.Err() != nil {
			t.Fatalf("another service account's token: %v", err)
		}
	}
}
