package audit_test

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyd-dev/keyd/audit"
)

func open(t *testing.T, o audit.Options) *audit.Log {
	t.Helper()
	l, err := audit.Open(o)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func write(t *testing.T, l *audit.Log, n int, prefix string) {
	t.Helper()
	for i := range n {
		if err := l.Record(audit.Record{Event: audit.EventTokenSigned, KeySet: "ks", JTI: fmt.Sprintf("%s-%d", prefix, i)}); err != nil {
			t.Fatal(err)
		}
	}
}

func lines(t *testing.T, path string) [][]byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return bytes.SplitAfter(data, []byte("\n"))
}

func TestChainVerifiesAndNamesTheAlteredLine(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	l := open(t, audit.Options{Path: path, Required: true})
	write(t, l, 10, "a")
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v", fi.Mode())
	}
	res, err := audit.Verify(path)
	if err != nil || res.Records != 10 {
		t.Fatalf("Verify = %+v, %v", res, err)
	}
	orig, _ := os.ReadFile(path)

	// One byte of line 4's content, its hash, or its prev: each is named.
	ls := lines(t, path)
	for _, pos := range []int{len(ls[3]) - 5, 12, 80} {
		data := bytes.Clone(orig)
		off := len(bytes.Join(ls[:3], nil)) + pos
		data[off] ^= 0x01
		os.WriteFile(path, data, 0o600)
		if _, err := audit.Verify(path); err == nil || !strings.Contains(err.Error(), "audit.log:4:") {
			t.Errorf("flipped byte %d of line 4: %v", pos, err)
		}
	}
	// A removed record is found where the chain breaks.
	os.WriteFile(path, bytes.Join(append(ls[:5:5], ls[6:]...), nil), 0o600)
	if _, err := audit.Verify(path); err == nil || !strings.Contains(err.Error(), "audit.log:6:") || !strings.Contains(err.Error(), "removed") {
		t.Errorf("removed line 6: %v", err)
	}
	// Two records swapped.
	os.WriteFile(path, bytes.Join([][]byte{ls[0], ls[2], ls[1], bytes.Join(ls[3:], nil)}, nil), 0o600)
	if _, err := audit.Verify(path); err == nil || !strings.Contains(err.Error(), "audit.log:2:") {
		t.Errorf("swapped lines: %v", err)
	}
}

func TestChainContinuesAcrossRestartAndRotation(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "audit.log")
	l := open(t, audit.Options{Path: path})
	write(t, l, 3, "first")
	l.Close()

	// A restart continues the file's chain; a partial last line (a crash
	// mid-write) is cut off first.
	f, _ := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString(`{"hash":"abc`)
	f.Close()
	l = open(t, audit.Options{Path: path, Required: true}) // each record written before Record returns
	write(t, l, 3, "second")

	// An outside tool renames the file away; keyd reopens and the new file
	// chains to the old one.
	rotated := filepath.Join(dir, "audit.log.1")
	if err := os.Rename(path, rotated); err != nil {
		t.Fatal(err)
	}
	l.Reopen()
	write(t, l, 2, "third")
	l.Close()

	if res, err := audit.Verify(rotated, path); err != nil || res.Records != 8 || res.Files != 2 {
		t.Fatalf("Verify(rotated, new) = %+v, %v", res, err)
	}
	if _, err := audit.Verify(path, rotated); err == nil {
		t.Fatal("files in the wrong order verified")
	}
	if n := len(lines(t, rotated)) - 1; n != 6 {
		t.Fatalf("rotated file has %d records, want 6", n)
	}
}

func TestRequiredFailsWhenTheFileCannotBeWritten(t *testing.T) {
	if _, err := os.Stat("/dev/full"); err != nil {
		t.Skip("no /dev/full")
	}
	var failures atomic.Int32
	l := open(t, audit.Options{Path: "/dev/full", Required: true, Failed: func(error) { failures.Add(1) }})
	defer l.Close()
	err := l.Record(audit.Record{Event: audit.EventTokenSigned})
	if !errors.Is(err, audit.ErrUnavailable) || failures.Load() == 0 {
		t.Fatalf("Record on a full disk = %v (failures %d)", err, failures.Load())
	}
	// Not required: the caller is not held up, the failure is reported.
	l2 := open(t, audit.Options{Path: "/dev/full", Failed: func(error) { failures.Add(1) }})
	before := failures.Load()
	if err := l2.Record(audit.Record{Event: audit.EventTokenSigned}); err != nil {
		t.Fatal(err)
	}
	l2.Close()
	if failures.Load() == before {
		t.Fatal("the failed write was not reported")
	}
}

func TestConcurrentRecordsAreGroupCommitted(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	var batches, written atomic.Int64
	l := open(t, audit.Options{Path: path, Required: true, Written: func(n int, _ time.Duration) { batches.Add(1); written.Add(int64(n)) }})
	var wg sync.WaitGroup
	for g := range 16 {
		wg.Go(func() { write(t, l, 100, fmt.Sprint(g)) })
	}
	wg.Wait()
	l.Close()
	res, err := audit.Verify(path)
	if err != nil || res.Records != 1600 || written.Load() != 1600 {
		t.Fatalf("Verify = %+v, %v; written %d", res, err, written.Load())
	}
	if batches.Load() >= 1600 {
		t.Errorf("%d batches for 1600 concurrent records: no group commit", batches.Load())
	}
	t.Logf("1600 records in %d synced batches", batches.Load())
}

func TestLongClaimsAreNotRecorded(t *testing.T) {
	long := []byte(`"` + strings.Repeat("x", audit.MaxClaimBytes) + `"`)
	if got := string(audit.Claim(long)); !strings.Contains(got, "not recorded") {
		t.Fatalf("Claim(long) = %.40s", got)
	}
	if got := string(audit.Claim([]byte(`"alice"`))); got != `"alice"` {
		t.Fatalf("Claim(short) = %s", got)
	}
}
