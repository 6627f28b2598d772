package audit_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/keyd-dev/keyd/audit"
)

var testKey = bytes.Repeat([]byte{7}, 32)

type checkpoint struct {
	seq uint64
	mac string
}

// keyedTrail writes n records, closes, reopens and writes m more, and
// returns the file and the checkpoints keyd would have logged.
func keyedTrail(t *testing.T, n, m int) (string, []checkpoint) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "audit.log")
	var cps []checkpoint
	o := audit.Options{Path: path, Key: testKey, Checkpoint: func(seq uint64, mac string) { cps = append(cps, checkpoint{seq, mac}) }}
	l := open(t, o)
	write(t, l, n, "a")
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l = open(t, o)
	write(t, l, m, "b")
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return path, cps
}

func TestKeyedTrailVerifies(t *testing.T) {
	path, cps := keyedTrail(t, 5, 3)
	res, err := audit.VerifyWith(audit.VerifyOptions{Key: testKey, CheckpointSeq: cps[len(cps)-1].seq, CheckpointMAC: cps[len(cps)-1].mac}, path)
	// open, 5, close, open, 3, close
	if err != nil || res.Records != 12 || res.FirstSeq != 1 || res.LastSeq != 12 || res.Checkpoints != 4 || len(cps) != 4 {
		t.Fatalf("keyed trail: %+v %v (checkpoints logged %v)", res, err, cps)
	}
	if _, err := audit.Verify(path); err == nil || !strings.Contains(err.Error(), "--key-file") {
		t.Fatalf("a keyed trail without the key: %v", err)
	}
	if _, err := audit.VerifyWith(audit.VerifyOptions{Key: bytes.Repeat([]byte{8}, 32)}, path); err == nil || !strings.Contains(err.Error(), "HMAC") {
		t.Fatalf("the wrong key: %v", err)
	}
}

// The review's attack: edit a caller, delete records and re-chain with
// SHA-256. Without the key the result cannot pass as the keyed trail.
func TestRechainedTrailFails(t *testing.T) {
	path, _ := keyedTrail(t, 5, 3)
	ls := lines(t, path)
	var out bytes.Buffer
	var prev [32]byte
	for i, l := range ls {
		if len(l) == 0 || i == 3 { // drop a record
			continue
		}
		rest := l[len(`{"hmac":"`)+64+2:]
		body := bytes.Replace(rest[len(`"prev":"`)+64+2:], []byte(`"ks"`), []byte(`"other"`), 1)
		line := append([]byte(`"prev":"`+hex.EncodeToString(prev[:])+`",`), body...)
		line = bytes.TrimSuffix(line, []byte("\n"))
		prev = sha256.Sum256(line)
		out.WriteString(`{"hash":"` + hex.EncodeToString(prev[:]) + `",`)
		out.Write(line)
		out.WriteByte('\n')
	}
	if err := os.WriteFile(path, out.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := audit.Verify(path); err != nil {
		t.Fatalf("the forgery is a valid unkeyed chain (as the review found): %v", err)
	}
	if _, err := audit.VerifyWith(audit.VerifyOptions{Key: testKey}, path); err == nil || !strings.Contains(err.Error(), "no record of the trail is keyed") {
		t.Fatalf("the re-chained trail with the key: %v", err)
	}
}

func TestTruncationIsFound(t *testing.T) {
	path, cps := keyedTrail(t, 5, 3)
	ls := lines(t, path)
	cut := func(name string, keep [][]byte) string {
		p := filepath.Join(filepath.Dir(path), name)
		if err := os.WriteFile(p, bytes.Join(keep, nil), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for name, tc := range map[string]struct {
		keep []byte
		want string
	}{
		// The first records removed, the file now starts with a record.
		"front": {bytes.Join(ls[3:], nil), "begin with"},
		// Cut just before the second "open" checkpoint: it is at offset 0
		// now, not where it was written.
		"to a checkpoint": {bytes.Join(ls[7:], nil), "does not begin with its checkpoint"},
		// A record removed from the middle.
		"middle": {append(bytes.Join(ls[:4], nil), bytes.Join(ls[5:], nil)...), "does not follow"},
	} {
		p := cut(name, [][]byte{tc.keep})
		if _, err := audit.VerifyWith(audit.VerifyOptions{Key: testKey}, p); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v (want %q)", name, err, tc.want)
		}
	}
	// The end removed: only the logged checkpoint shows it.
	p := cut("end", ls[:len(ls)-3])
	last := cps[len(cps)-1]
	if _, err := audit.VerifyWith(audit.VerifyOptions{Key: testKey}, p); err != nil {
		t.Fatalf("an end-truncated trail is a valid prefix: %v", err)
	}
	if _, err := audit.VerifyWith(audit.VerifyOptions{Key: testKey, CheckpointSeq: last.seq, CheckpointMAC: last.mac}, p); err == nil || !strings.Contains(err.Error(), "removed from its end") {
		t.Fatalf("with the logged checkpoint: %v", err)
	}
}

// copytruncate: an outside tool copies the file and empties it; keyd's
// next record starts the emptied file with a checkpoint, and the copy and
// the file verify as one trail.
func TestKeyedCopyTruncate(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "audit.log")
	l := open(t, audit.Options{Path: path, Key: testKey, Required: true}) // each record on disk when Record returns
	write(t, l, 3, "a")
	data, _ := os.ReadFile(path)
	if err := os.WriteFile(path+".1", data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, 0); err != nil {
		t.Fatal(err)
	}
	write(t, l, 2, "b")
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	res, err := audit.VerifyWith(audit.VerifyOptions{Key: testKey}, path+".1", path)
	if err != nil || res.Files != 2 || res.LastSeq != 8 { // open, 3 | file_start, 2, close
		t.Fatalf("copytruncate: %+v %v", res, err)
	}
	first := lines(t, path)[0]
	if !bytes.Contains(first, []byte(`"event":"audit_checkpoint"`)) || !bytes.Contains(first, []byte(`"trigger":"file_start"`)) {
		t.Fatalf("the emptied file's first line: %s", first)
	}
}
