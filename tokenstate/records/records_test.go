package records_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyd-dev/keyd/backends/file"
	"github.com/keyd-dev/keyd/internal/parallel"
	"github.com/keyd-dev/keyd/tokenstate"
	"github.com/keyd-dev/keyd/tokenstate/records"
	"github.com/keyd-dev/keyd/tokenstate/tokenstatetest"
)

// The engine over a real bbolt file; backends/vault runs it over OpenBao.
func TestOnBbolt(t *testing.T) {
	tokenstatetest.Run(t, func(t *testing.T) tokenstate.Store {
		s, err := file.Open(file.Options{Path: filepath.Join(t.TempDir(), "keyd.db"), MasterKey: make([]byte, 32)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		return records.New(s)
	})
}

// BenchmarkPutRevocation: revocations written by 16 concurrent callers to a
// bbolt file already holding n entries. KEYD_BENCH_REVOCATIONS sets n
// (default 0 and 100,000; docs/performance.md's figures use 1,000,000 too).
func BenchmarkPutRevocation(b *testing.B) {
	sizes := []int{0, 100_000}
	if v := os.Getenv("KEYD_BENCH_REVOCATIONS"); v != "" {
		sizes = nil
		for _, f := range strings.Split(v, ",") {
			n, _ := strconv.Atoi(f)
			sizes = append(sizes, n)
		}
	}
	now := time.Now()
	for _, n := range sizes {
		b.Run(fmt.Sprintf("in_force=%d", n), func(b *testing.B) {
			s, err := file.Open(file.Options{Path: filepath.Join(b.TempDir(), "keyd.db"), MasterKey: make([]byte, 32)})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			st := records.New(s)
			ctx := context.Background()
			parallel.Each(n, 64, func(i int) {
				if _, err := st.PutRevocation(ctx, tokenstate.Revocation{KeySet: "a", JTI: fmt.Sprint("old-", i+1), Expires: now.Add(time.Hour)}); err != nil {
					b.Error(err)
				}
			})
			b.SetParallelism(8) // 16 callers on 2 cores
			var id atomic.Int64
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := st.PutRevocation(ctx, tokenstate.Revocation{KeySet: "a", JTI: fmt.Sprint("new-", id.Add(1)), Expires: now.Add(time.Hour)}); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "revocations/s")
		})
	}
}
