package backup

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"filippo.io/age"

	"github.com/keyd-dev/keyd/internal/storecodec"
	"github.com/keyd-dev/keyd/keystore"
)

// ErrDamaged means a backup file is not whole or was altered: nothing of
// it is used.
var ErrDamaged = errors.New("backup file damaged or altered")

// ErrIdentity means none of the identities given decrypts the backup.
var ErrIdentity = errors.New("no identity given opens this backup")

// maxLine bounds one entry (a key set with its keys and certificates) and
// the manifest in clear.
const maxLine = 64 << 20

// ParseIdentities reads an age identity file (AGE-SECRET-KEY-1...; # lines
// ignored). The error never quotes the file.
func ParseIdentities(r io.Reader) ([]age.Identity, error) {
	ids, err := age.ParseIdentities(r)
	if err != nil {
		return nil, errors.New("not an age identity file (AGE-SECRET-KEY-1... lines)")
	}
	return ids, nil
}

// Inspect reads the manifest in clear at the head of r. With whole, it
// also reads the rest and checks its size and SHA-256 against the
// manifest, which needs no identity: a truncated or corrupted file is
// ErrDamaged. It does not prove the manifest true (only decryption does:
// Check).
func Inspect(r io.Reader, whole bool) (*Manifest, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	m, err := readHead(br)
	if err != nil || !whole {
		return m, err
	}
	sum, n := sha256.New(), &counter{}
	if _, err := io.Copy(io.MultiWriter(sum, n), br); err != nil {
		return m, err
	}
	if n.n != m.Sealed.Bytes || hex.EncodeToString(sum.Sum(nil)) != m.Sealed.SHA256 {
		return m, fmt.Errorf("%w: the encrypted part is %d bytes with another checksum than the manifest's %d bytes (truncated or altered)", ErrDamaged, n.n, m.Sealed.Bytes)
	}
	return m, nil
}

func readHead(br *bufio.Reader) (*Manifest, error) {
	magic, err := br.ReadString('\n')
	if strings.TrimSuffix(magic, "\n") != Magic {
		if err == nil || errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("not a keyd backup (it does not start with %q)", Magic)
		}
		return nil, err
	}
	line, err := readLine(br)
	if err != nil {
		return nil, fmt.Errorf("%w: the manifest: %v", ErrDamaged, err)
	}
	var m Manifest
	if err := json.Unmarshal(line, &m); err != nil || m.Sealed == nil {
		return nil, fmt.Errorf("%w: the manifest is not valid", ErrDamaged)
	}
	if m.Format != Format {
		return nil, fmt.Errorf("backup format %d: this keyd reads format %d", m.Format, Format)
	}
	return &m, nil
}

// readLine reads one line (without its newline) of at most maxLine bytes.
func readLine(br *bufio.Reader) ([]byte, error) {
	var line []byte
	for {
		part, err := br.ReadSlice('\n')
		line = append(line, part...)
		if len(line) > maxLine {
			return nil, errors.New("line too long")
		}
		if err == nil {
			return line[:len(line)-1], nil
		}
		if !errors.Is(err, bufio.ErrBufferFull) {
			if errors.Is(err, io.EOF) {
				if len(line) == 0 {
					return nil, io.EOF
				}
				return nil, io.ErrUnexpectedEOF
			}
			return nil, err
		}
	}
}

// Check decrypts the backup in r and checks all of it (every entry valid,
// the counts and checksums, the sealed manifest the same as the one in
// clear), returning its manifest. It writes nothing.
func Check(r io.Reader, ids []age.Identity) (*Manifest, error) {
	return read(r, ids, nil)
}

// read decrypts the backup in r and passes each entry to fn (nil: none),
// checking everything Check does; fn sees entries before the file is known
// to be whole, so a caller that writes checks first.
func read(r io.Reader, ids []age.Identity, fn func(entry) error) (*Manifest, error) {
	br := bufio.NewReaderSize(r, 256<<10)
	head, err := readHead(br)
	if err != nil {
		return nil, err
	}
	sealedSum, sealedN := sha256.New(), &counter{}
	tee := io.TeeReader(br, io.MultiWriter(sealedSum, sealedN))
	dec, err := age.Decrypt(tee, ids...)
	if err != nil {
		if _, ok := errors.AsType[*age.NoIdentityMatchError](err); ok {
			return nil, fmt.Errorf("%w (it is encrypted to %s)", ErrIdentity, strings.Join(head.Recipients, ", "))
		}
		return nil, fmt.Errorf("%w: %v", ErrDamaged, err)
	}
	inner, err := readEntries(bufio.NewReaderSize(dec, 256<<10), fn)
	if err != nil {
		return nil, err
	}
	if _, err := io.Copy(io.Discard, tee); err != nil {
		return nil, err
	}
	if sealedN.n != head.Sealed.Bytes || hex.EncodeToString(sealedSum.Sum(nil)) != head.Sealed.SHA256 {
		return nil, fmt.Errorf("%w: the encrypted part does not match the manifest's size and checksum", ErrDamaged)
	}
	clear := *head
	clear.Sealed = nil
	a, _ := json.Marshal(clear)
	b, _ := json.Marshal(inner)
	if !bytes.Equal(a, b) {
		return nil, fmt.Errorf("%w: the manifest in clear is not the one sealed inside", ErrDamaged)
	}
	return head, nil
}

// tally counts entries as they are read, to hold them to the manifest.
type tally struct {
	keysets     []KeySetSummary
	revocations int
	records     map[string]int
	entries     int
}

// readEntries reads the decrypted entries up to and including the sealed
// manifest, which must be last, and checks it counts what came before.
func readEntries(br *bufio.Reader, fn func(entry) error) (*Manifest, error) {
	sum := sha256.New()
	t := tally{records: map[string]int{}, keysets: []KeySetSummary{}}
	for {
		line, err := readLine(br)
		if err != nil {
			return nil, fmt.Errorf("%w: after %d entries: %v", ErrDamaged, t.entries, err)
		}
		var e entry
		if err := json.Unmarshal(line, &e); err != nil {
			return nil, fmt.Errorf("%w: entry %d is not valid JSON", ErrDamaged, t.entries+1)
		}
		if e.Manifest != nil {
			if err := t.matches(e.Manifest, hex.EncodeToString(sum.Sum(nil))); err != nil {
				return nil, err
			}
			if _, err := readLine(br); !errors.Is(err, io.EOF) {
				return nil, fmt.Errorf("%w: entries after the manifest", ErrDamaged)
			}
			return e.Manifest, nil
		}
		sum.Write(line)
		sum.Write([]byte{'\n'})
		t.entries++
		if err := t.check(e); err != nil {
			return nil, fmt.Errorf("%w: entry %d: %v", ErrDamaged, t.entries, err)
		}
		if fn != nil {
			if err := fn(e); err != nil {
				return nil, err
			}
		}
	}
}

// check validates one entry and counts it.
func (t *tally) check(e entry) error {
	switch {
	case e.KeySet != nil:
		ks, err := e.KeySet.Decode(storecodec.Plain)
		if err == nil {
			err = ks.Check()
		}
		if err != nil {
			return fmt.Errorf("key set %q: %v", e.KeySet.Name, err)
		}
		t.keysets = append(t.keysets, summarize(ks))
	case e.Revocation != nil:
		r := e.Revocation
		if r.KeySet == "" || (r.JTI == "") == (r.Subject == "") || r.Expires.IsZero() {
			return errors.New("a revocation needs a key set, a jti or a subject, and an expiry")
		}
		t.revocations++
	case e.Record != nil:
		if e.Record.Kind == "" || e.Record.ID == "" {
			return errors.New("a record needs a kind and an id")
		}
		t.records[e.Record.Kind]++
	default:
		return errors.New("an entry of no known type")
	}
	return nil
}

// matches holds the sealed manifest m to what was counted.
func (t *tally) matches(m *Manifest, sum string) error {
	a, _ := json.Marshal(t.keysets)
	b, _ := json.Marshal(m.KeySets)
	if m.Records == nil {
		m.Records = map[string]int{}
	}
	c, _ := json.Marshal(t.records)
	d, _ := json.Marshal(m.Records)
	if !bytes.Equal(a, b) || !bytes.Equal(c, d) || t.revocations != m.Revocations || t.entries != m.Entries || sum != m.SHA256 {
		return fmt.Errorf("%w: the entries do not match the sealed manifest", ErrDamaged)
	}
	return nil
}

// keySet decodes a key set entry (already checked).
func (e entry) keySet() (*keystore.KeySet, error) { return e.KeySet.Decode(storecodec.Plain) }
