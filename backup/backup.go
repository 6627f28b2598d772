// Package backup is keyd's backup file: everything a key store and its
// token state hold (key sets with their private keys, custody references
// and certificates; revocations; subject cut-offs and refresh logins),
// written from a running keyd and read back into a store of any backend.
// It is a package of its own because one format serves the admin API's
// backups, `keyd restore` and, later, scheduled backups and moves between
// stores: the daemon and the CLI only call it.
//
// A backup file is a line naming the format, the manifest in clear (so
// `keyd backup inspect` shows what a file holds and checks it is whole
// without any secret), and then the entries, encrypted to one or more age
// recipients (filippo.io/age): the machine that makes backups cannot read
// them. The entries end with the same manifest, sealed: a manifest in
// clear that does not match it is refused, as is a file age does not
// authenticate (altered or truncated). A backup is confidential, not
// signed: anyone who knows a recipient can make a file that decrypts, so
// restore only backups from where you keep them.
package backup

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"filippo.io/age"

	"github.com/keyd-dev/keyd/internal/storecodec"
	"github.com/keyd-dev/keyd/keystore"
	"github.com/keyd-dev/keyd/tokenstate"
)

// Magic is the first line of every backup file.
const Magic = "keyd-backup 1"

// Format is the version of the entries' format.
const Format = 1

// State is what a backup is read from or restored into: the key store,
// the token state's revocations and its records of Kinds (refresh logins,
// subject cut-offs), and the key store's own records (Meta), where a
// restore marks its progress. Tokens and Records may be nil (none).
type State struct {
	KeySets keystore.Store
	Tokens  tokenstate.Store
	Records keystore.RecordStore
	Kinds   []string
	Meta    keystore.RecordStore
}

// Manifest says what a backup holds. The same manifest is in clear at the
// head of the file and sealed at the end of its entries.
type Manifest struct {
	Format      int             `json:"format"`
	KeydVersion string          `json:"keyd_version"`
	CreatedAt   time.Time       `json:"created_at"`
	Source      string          `json:"source,omitempty"` // the store it was read from
	Recipients  []string        `json:"recipients"`
	KeySets     []KeySetSummary `json:"keysets"`
	Revocations int             `json:"revocations"`
	Records     map[string]int  `json:"records"` // by kind
	Entries     int             `json:"entries"`
	SHA256      string          `json:"sha256"` // of the entries before the sealed manifest
	// Sealed is the encrypted part as written (in the clear manifest only):
	// inspect checks a file is whole against it without any identity.
	Sealed *Sealed `json:"sealed,omitempty"`
}

// Sealed describes the encrypted part of a backup file.
type Sealed struct {
	Bytes  int64  `json:"bytes"`
	SHA256 string `json:"sha256"`
}

// KeySetSummary counts what a backup holds of one key set.
type KeySetSummary struct {
	Name      string         `json:"name"`
	Algorithm string         `json:"algorithm"`
	Keys      int            `json:"keys"`
	Custody   map[string]int `json:"custody,omitempty"` // keys held by a custody, by custody: restored as references
}

// entry is one line of the encrypted part.
type entry struct {
	KeySet     *storecodec.Record `json:"keyset,omitempty"`
	Revocation *revocation        `json:"revocation,omitempty"`
	Record     *record            `json:"record,omitempty"`
	Manifest   *Manifest          `json:"manifest,omitempty"`
}

type revocation struct {
	KeySet    string    `json:"keyset"`
	JTI       string    `json:"jti,omitempty"`
	Subject   string    `json:"sub,omitempty"`
	Before    time.Time `json:"before,omitzero"`
	Expires   time.Time `json:"exp"`
	RevokedAt time.Time `json:"revoked_at,omitzero"`
	Reason    string    `json:"reason,omitempty"`
}

type record struct {
	Kind    string    `json:"kind"`
	ID      string    `json:"id"`
	Data    []byte    `json:"data"`
	Expires time.Time `json:"exp,omitzero"`
}

// Options configure Write.
type Options struct {
	// Recipients are age recipients (age1..., age1pq1...): at least one.
	Recipients  []string
	KeydVersion string
	Source      string
	Now         time.Time // default time.Now
	// SpoolDir holds the encrypted entries while they are written (the
	// manifest, which counts them, comes first in the file): default the
	// system's temporary folder.
	SpoolDir string
}

// ParseRecipients parses age recipients, one per string, naming the one
// that is not.
func ParseRecipients(list []string) ([]age.Recipient, error) {
	if len(list) == 0 {
		return nil, errors.New("no recipient: a backup is encrypted to at least one age recipient (age1...)")
	}
	var out []age.Recipient
	for i, s := range list {
		s = strings.TrimSpace(s)
		r, err := age.ParseRecipients(strings.NewReader(s))
		if err != nil || len(r) != 1 || strings.ContainsAny(s, "\n#") {
			return nil, fmt.Errorf("recipients[%d] (%.12q...): not an age recipient (age1... or age1pq1...)", i, s)
		}
		out = append(out, r[0])
	}
	return out, nil
}

// ReadRecipientsFile reads an age recipients file: one recipient a line,
// blank lines and # comments ignored.
func ReadRecipientsFile(path string) ([]string, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out []string
	for line := range strings.Lines(string(raw)) {
		if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
			out = append(out, line)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s holds no recipient", path)
	}
	return out, nil
}

// Write reads src whole and writes a backup of it to dst, encrypted to
// opts.Recipients. Nothing is written to dst until every entry has been
// read and sealed, so a failure leaves dst untouched. Each key set, entry
// and record is read whole: a rotation or revocation made meanwhile is in
// the backup or not, never half.
func Write(ctx context.Context, dst io.Writer, src State, opts Options) (*Manifest, error) {
	recips, err := ParseRecipients(opts.Recipients)
	if err != nil {
		return nil, err
	}
	spool, err := os.CreateTemp(opts.SpoolDir, ".keyd-backup-*")
	if err != nil {
		return nil, fmt.Errorf("backup spool: %w", err)
	}
	defer func() { _ = spool.Close(); _ = os.Remove(spool.Name()) }()
	m := &Manifest{Format: Format, KeydVersion: opts.KeydVersion, Source: opts.Source, Records: map[string]int{},
		KeySets: []KeySetSummary{}, Recipients: trimAll(opts.Recipients)}
	m.CreatedAt = opts.Now
	if m.CreatedAt.IsZero() {
		m.CreatedAt = time.Now()
	}
	m.CreatedAt = m.CreatedAt.UTC().Truncate(time.Second)
	sealedSum := sha256.New()
	sealedN := &counter{}
	enc, err := age.Encrypt(io.MultiWriter(spool, sealedSum, sealedN), recips...)
	if err != nil {
		return nil, err
	}
	buf := bufio.NewWriterSize(enc, 256<<10)
	w := &entryWriter{sum: sha256.New()}
	w.enc = json.NewEncoder(io.MultiWriter(buf, w.sum))
	if err := writeEntries(ctx, w, src, m); err != nil {
		return nil, err
	}
	m.Entries, m.SHA256 = w.n, hex.EncodeToString(w.sum.Sum(nil))
	if err := w.enc.Encode(entry{Manifest: m}); err != nil {
		return nil, err
	}
	if err := buf.Flush(); err != nil {
		return nil, err
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	outer := *m
	outer.Sealed = &Sealed{Bytes: sealedN.n, SHA256: hex.EncodeToString(sealedSum.Sum(nil))}
	head, err := json.Marshal(outer)
	if err != nil {
		return nil, err
	}
	if _, err := spool.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	if _, err := fmt.Fprintf(dst, "%s\n%s\n", Magic, head); err != nil {
		return nil, err
	}
	if _, err := io.Copy(dst, spool); err != nil {
		return nil, err
	}
	return &outer, nil
}

// writeEntries writes every key set, revocation and record of src,
// counting them in m.
func writeEntries(ctx context.Context, w *entryWriter, src State, m *Manifest) error {
	sets, err := src.KeySets.List(ctx)
	if err != nil {
		return fmt.Errorf("reading the key sets: %w", err)
	}
	for _, ks := range sets {
		r, err := storecodec.Encode(ks, storecodec.Plain)
		if err != nil {
			return err
		}
		r.Version = 0
		if err := w.put(entry{KeySet: r}); err != nil {
			return err
		}
		m.KeySets = append(m.KeySets, summarize(ks))
	}
	if src.Tokens != nil {
		err := src.Tokens.Revocations(ctx, func(r tokenstate.Revocation) {
			w.putAsync(entry{Revocation: &revocation{KeySet: r.KeySet, JTI: r.JTI, Subject: r.Subject, Before: r.Before.UTC(),
				Expires: r.Expires.UTC(), RevokedAt: r.RevokedAt.UTC(), Reason: r.Reason}}, func() { m.Revocations++ })
		})
		if err == nil {
			err = w.asyncErr()
		}
		if err != nil {
			return fmt.Errorf("reading the revocations: %w", err)
		}
	}
	for _, kind := range src.Kinds {
		if src.Records == nil {
			break
		}
		err := keystore.EachRecord(ctx, src.Records, kind, func(r *keystore.Record) error {
			w.putAsync(entry{Record: &record{Kind: kind, ID: r.ID, Data: r.Data, Expires: r.Expires.UTC()}}, func() { m.Records[kind]++ })
			return w.asyncErr()
		})
		if err != nil {
			return fmt.Errorf("reading the records of kind %s: %w", kind, err)
		}
	}
	return nil
}

func summarize(ks *keystore.KeySet) KeySetSummary {
	s := KeySetSummary{Name: ks.Name, Algorithm: string(ks.Algorithm), Keys: len(ks.Keys)}
	for _, k := range ks.Keys {
		if k.Custody != "" {
			if s.Custody == nil {
				s.Custody = map[string]int{}
			}
			s.Custody[k.Custody]++
		}
	}
	return s
}

// entryWriter writes entries one a line, from one goroutine or several
// (a store streams its revocations on every processor).
type entryWriter struct {
	mu  sync.Mutex
	enc *json.Encoder
	sum hash.Hash
	n   int
	err error
}

func (w *entryWriter) put(e entry) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.putLocked(e)
}

func (w *entryWriter) putLocked(e entry) error {
	if w.err != nil {
		return w.err
	}
	if err := w.enc.Encode(e); err != nil {
		w.err = err
		return err
	}
	w.n++
	return nil
}

// putAsync writes e and, once written, calls counted under the writer's
// lock; an error is kept for asyncErr.
func (w *entryWriter) putAsync(e entry, counted func()) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.putLocked(e) == nil {
		counted()
	}
}

func (w *entryWriter) asyncErr() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

type counter struct{ n int64 }

func (c *counter) Write(b []byte) (int, error) { c.n += int64(len(b)); return len(b), nil }

func trimAll(list []string) []string {
	out := make([]string, len(list))
	for i, s := range list {
		out[i] = strings.TrimSpace(s)
	}
	return out
}
