package blob_test

import (
	"context"
	"strings"
	"testing"

	"github.com/keyd-dev/keyd/internal/testblob"
	"github.com/keyd-dev/keyd/publish"
	"github.com/keyd-dev/keyd/publish/blob"
	"github.com/keyd-dev/keyd/publish/publishtest"
)

// The suite on each object store, a real server: SeaweedFS's S3 API,
// fake-gcs-server and Azurite. Each subtest's files go under a prefix of
// their own in the one bucket, and are read back anonymously over HTTP.
func TestConformanceObjectStores(t *testing.T) {
	for _, start := range []func(testing.TB) *testblob.Server{testblob.S3, testblob.GCS, testblob.Azure} {
		srv := start(t)
		t.Run(srv.Scheme, func(t *testing.T) {
			srv.Setenv(t)
			n := 0
			publishtest.Run(t, func(t *testing.T) publish.Target {
				n++
				tg, err := blob.Open(context.Background(), strings.Replace(srv.URL, "/site", "/site/"+string(rune('a'+n)), 1))
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { _ = tg.Close() })
				return tg
			})
			// What the target wrote is what a verifier reads, anonymously.
			tg, err := blob.Open(context.Background(), srv.URL)
			if err != nil {
				t.Fatal(err)
			}
			defer tg.Close()
			if err := tg.Put(context.Background(), ".well-known/jwks.json", []byte(`{"keys":[]}`), "application/json", "public, max-age=60"); err != nil {
				t.Fatal(err)
			}
			body, status, h := srv.Get(t, ".well-known/jwks.json")
			if status != 200 || string(body) != `{"keys":[]}` || h.Get("Content-Type") != "application/json" || h.Get("Cache-Control") != "public, max-age=60" {
				t.Fatalf("read anonymously: %d %q, Content-Type %q, Cache-Control %q", status, body, h.Get("Content-Type"), h.Get("Cache-Control"))
			}
		})
	}
}

// S3 (SeaweedFS with identities) with a secret it refuses, and with no
// credentials: the write fails and nothing is written.
func TestS3RefusedCredentials(t *testing.T) {
	srv := testblob.S3(t)
	srv.Setenv(t)
	ctx := context.Background()
	for name, secret := range map[string]string{"a wrong secret": "not-the-secret-0123456789", "no credentials": ""} {
		t.Run(name, func(t *testing.T) {
			if secret == "" {
				t.Setenv("AWS_ACCESS_KEY_ID", "")
				t.Setenv("AWS_SECRET_ACCESS_KEY", "")
			} else {
				t.Setenv("AWS_SECRET_ACCESS_KEY", secret)
			}
			tg, err := blob.Open(ctx, srv.URL)
			if err != nil {
				t.Fatal(err)
			}
			defer tg.Close()
			err = tg.Put(ctx, ".well-known/jwks.json", []byte(`{"keys":[]}`), "application/json", "public, max-age=60")
			if err == nil {
				t.Fatal("the store took a write with refused credentials")
			}
			if _, status, _ := srv.Get(t, ".well-known/jwks.json"); status == 200 {
				t.Fatal("something was written")
			}
		})
	}
}
