package blob_test

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyd-dev/keyd/internal/testblob"
	"github.com/keyd-dev/keyd/jwks"
	"github.com/keyd-dev/keyd/keystore"
	"github.com/keyd-dev/keyd/keystore/keystoretest"
	"github.com/keyd-dev/keyd/publish"
	"github.com/keyd-dev/keyd/publish/blob"
	"github.com/keyd-dev/keyd/signer"
)

// source is one ES256 key set, for the JWKS publisher and the signer.
func source(b *testing.B) (*jwks.Publisher, *signer.Signer) {
	pub, sg := jwks.New(), signer.New(time.Now, nil)
	ks := keystoretest.KeySet(b, "es", keystore.ES256)
	ks.Version = 1
	p := keystore.Policy{Name: "es", Algorithm: keystore.ES256, TokenTTL: 5 * time.Minute, JWKSMaxAge: time.Minute}
	if err := pub.Load(p, ks); err != nil {
		b.Fatal(err)
	}
	if err := sg.Load(p, ks); err != nil {
		b.Fatal(err)
	}
	return pub, sg
}

// BenchmarkPublishRound is a publisher's round after a rotation, per
// target: the JWKS and discovery document rendered, written, and read
// back (what a rotation waits for), on a folder and each object store.
func BenchmarkPublishRound(b *testing.B) {
	pub, _ := source(b)
	stores := map[string]func(testing.TB) *testblob.Server{"s3": testblob.S3, "gs": testblob.GCS, "azblob": testblob.Azure}
	for _, name := range []string{"folder", "s3", "gs", "azblob"} {
		b.Run(name, func(b *testing.B) {
			to := "file://" + filepath.Join(b.TempDir(), "site")
			if start := stores[name]; start != nil {
				srv := start(b)
				for _, kv := range srv.Env {
					k, v, _ := strings.Cut(kv, "=")
					b.Setenv(k, v)
				}
				to = srv.URL
			}
			tg, err := blob.Open(context.Background(), to)
			if err != nil {
				b.Fatal(err)
			}
			defer tg.Close()
			p := publish.New(publish.Spec{Name: name, KeySets: []string{"es"}, Files: []string{publish.FileJWKS, publish.FileDiscovery},
				Issuer: "https://issuer.example", Required: true}, tg, pub, time.Now, nil)
			for b.Loop() {
				if err := p.Once(context.Background(), true); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkSignWhilePublishing is ES256 signing on every core, alone and
// with a publisher writing to a folder without pause (far busier than a
// real one, which writes when a key set changes): what publishing costs
// the hot path. Nothing is shared but the CPU.
func BenchmarkSignWhilePublishing(b *testing.B) {
	for _, busy := range []bool{false, true} {
		name := "idle"
		if busy {
			name = "publishing"
		}
		b.Run(name, func(b *testing.B) {
			pub, sg := source(b)
			tg, err := blob.Open(context.Background(), "file://"+filepath.Join(b.TempDir(), "site"))
			if err != nil {
				b.Fatal(err)
			}
			defer tg.Close()
			p := publish.New(publish.Spec{Name: "folder", KeySets: []string{"es"}, Files: []string{publish.FileJWKS}}, tg, pub, time.Now, nil)
			var stop atomic.Bool
			var rounds atomic.Int64
			done := make(chan struct{})
			go func() {
				defer close(done)
				for busy && !stop.Load() {
					if err := p.Once(context.Background(), true); err == nil {
						rounds.Add(1)
					}
				}
			}()
			claims := signer.Claims{"sub": json.RawMessage(`"alice"`)}
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := sg.Sign("es", claims, 0); err != nil {
						b.Error(err)
						return
					}
				}
			})
			stop.Store(true)
			<-done
			b.ReportMetric(float64(rounds.Load()), "publish-rounds")
		})
	}
}
