package vault_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	vaultapi "github.com/hashicorp/vault/api"

	"github.com/keyd-dev/keyd/backends/vault"
	"github.com/keyd-dev/keyd/internal/testvault"
	"github.com/keyd-dev/keyd/keystore"
	"github.com/keyd-dev/keyd/keystore/keystoretest"
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
	client, err := vaultapi.NewClient(&vaultapi.Config{Address: srv.Addr})
	if err != nil {
		t.Fatal(err)
	}
	client.SetToken(testvault.RootToken)
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
	if err := s.Ping(ctx); !errors.Is(err, keystore.ErrUnavailable) {
		t.Fatalf("Ping during an outage = %v", err)
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
