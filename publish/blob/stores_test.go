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
