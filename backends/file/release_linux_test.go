package file_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/keyd-dev/keyd/backends/file"
	"github.com/keyd-dev/keyd/keystore"
)

// rssFile is the process's resident pages of mapped files, in bytes.
func rssFile(t *testing.T) int64 {
	t.Helper()
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(status), "\n") {
		if rest, ok := strings.CutPrefix(line, "RssFile:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			return kb << 10
		}
	}
	t.Fatal("no RssFile in /proc/self/status")
	return 0
}

// After a load reads the whole file through bbolt's mapping, its pages
// count in keyd's RSS; ReleaseMapped gives them back, and every record
// still reads as written (the pages come back from the page cache).
func TestReleaseMapped(t *testing.T) {
	s, err := file.Open(file.Options{Path: filepath.Join(t.TempDir(), "keyd.db"), MasterKey: masterKey(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	data := bytes.Repeat([]byte("x"), 2000)
	var wg sync.WaitGroup // concurrent writers share batched commits
	for w := range 16 {
		wg.Go(func() {
			for i := range 1000 {
				if _, err := s.PutRecord(ctx, "r", &keystore.Record{ID: fmt.Sprint(w, "-", i), Data: data}); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	read := func() {
		t.Helper()
		var n atomic.Int64 // fn runs on every processor
		if err := s.EachRecord(ctx, "r", func(r *keystore.Record) error {
			if !bytes.Equal(r.Data, data) {
				return fmt.Errorf("record %s reads %d bytes", r.ID, len(r.Data))
			}
			n.Add(1)
			return nil
		}); err != nil || n.Load() != 16000 {
			t.Fatalf("read %d records: %v", n.Load(), err)
		}
	}
	read()
	before := rssFile(t)
	if err := s.ReleaseMapped(); err != nil {
		t.Fatal(err)
	}
	after := rssFile(t)
	if before-after < 16<<20 {
		t.Fatalf("RssFile %d MiB before, %d MiB after releasing a 32 MB file's pages", before>>20, after>>20)
	}
	t.Logf("RssFile %d MiB before, %d MiB after", before>>20, after>>20)
	read()
}
