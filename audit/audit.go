// Package audit is keyd's tamper-evident audit trail: one JSON line per
// security event (a token signed, a verification failed, a key rotated,
// revoked or destroyed, a caller refused, the config loaded), written to a
// file or stdout.
//
// Each line is chained to the one before it: it starts with
// {"hash":H,"prev":P, where P is the previous record's H and H is the
// SHA-256 of everything after the `"hash":"…",` member. Altering, inserting
// or removing a line breaks the chain at that line, and Verify names it.
// The first record of a file carries the hash of the last record of the
// file before it (the file keyd continues after a restart, or the one an
// external tool rotated away while keyd ran), so rotated files verify as
// one chain. Removing the newest lines cannot be seen from the file alone:
// ship the records elsewhere as they are written.
//
// Writes are group commits: records that arrive while the previous batch is
// being written go out together in one write and, when records must be
// durable, one fsync. In required mode (Options.Required) Record returns
// only once the record is on disk, and fails when it could not be written,
// so that a caller can refuse to hand out what was not recorded.
//
// Records never hold a token, a bearer credential, key material, or claim
// values other than sub and aud (capped in size).
package audit

import (
	"bufio"
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// ErrUnavailable means a record could not be written.
var ErrUnavailable = errors.New("audit trail unavailable")

// Record is one security event. Empty fields are left out of the line.
type Record struct {
	Time   time.Time       `json:"time"`
	Event  string          `json:"event"`
	KeySet string          `json:"keyset,omitempty"`
	KID    string          `json:"kid,omitempty"`
	JTI    string          `json:"jti,omitempty"`
	Sub    json.RawMessage `json:"sub,omitempty"`
	Aud    json.RawMessage `json:"aud,omitempty"`
	Exp    int64           `json:"exp,omitempty"`
	// Caller is the authenticated caller's token name, never the token.
	Caller  string `json:"caller,omitempty"`
	Remote  string `json:"remote,omitempty"`
	Route   string `json:"route,omitempty"`
	Reason  string `json:"reason,omitempty"`
	Scope   string `json:"scope,omitempty"`
	Pending string `json:"pending_kid,omitempty"`
	Trigger string `json:"trigger,omitempty"`
	Actor   string `json:"actor,omitempty"`
	Detail  string `json:"detail,omitempty"`
	// Count is how many events one record stands for (auth failures are
	// aggregated per source and reason); 0 means one.
	Count int `json:"count,omitempty"`
	// Offset is a checkpoint's byte offset in its file (keyed trails).
	Offset int64 `json:"offset,omitempty"`
}

// Event names.
const (
	EventTokenSigned    = "token_signed"
	EventVerifyFailed   = "verify_failed"
	EventAuthFailed     = "auth_failed"
	EventConfigLoaded   = "config_loaded"
	EventConfigReloaded = "config_reloaded"
	EventReloadFailed   = "config_reload_failed"
	EventRefreshReused  = "refresh_token_reused" // a spent refresh token came back: its login is revoked
	EventLoginRevoked   = "login_revoked"        // an admin ended one refresh login
	EventBackup         = "backup"               // an admin asked for a backup (every key, sealed to the recipients in detail)
	// EventCheckpoint is written by a keyed trail itself: at the start of
	// every file (offset 0), when keyd opens the trail, every
	// CheckpointInterval while records come, and at close. Its seq and
	// MAC are what an operator keeps elsewhere (keyd logs them).
	EventCheckpoint = "audit_checkpoint"
)

// MaxClaimBytes caps the sub and aud a record keeps; longer values are
// replaced by a note of their size.
const MaxClaimBytes = 1024

// Claim returns raw as a record keeps it: as given, or, when longer than
// MaxClaimBytes, a JSON string saying how long it was.
func Claim(raw json.RawMessage) json.RawMessage {
	if len(raw) <= MaxClaimBytes {
		return raw
	}
	return json.RawMessage(fmt.Sprintf(`"[%d bytes, not recorded]"`, len(raw)))
}

// MaxFieldBytes caps every string field of a record: most of them can
// hold what a caller sent (a kid, a jti, a route, a reason), and no
// caller may grow the trail by more than a bounded amount per record.
const MaxFieldBytes = 256

// capFields cuts every string field longer than MaxFieldBytes, noting the
// size it had.
func (r *Record) capFields() {
	for _, f := range []*string{&r.Event, &r.KeySet, &r.KID, &r.JTI, &r.Caller, &r.Remote, &r.Route, &r.Reason,
		&r.Scope, &r.Pending, &r.Trigger, &r.Actor, &r.Detail} {
		if n := len(*f); n > MaxFieldBytes {
			*f = strings.ToValidUTF8((*f)[:MaxFieldBytes-32], "") + fmt.Sprintf("...[%d bytes]", n)
		}
	}
	r.Sub, r.Aud = Claim(r.Sub), Claim(r.Aud)
}

// Options configure a Log.
type Options struct {
	// Path is the file to append to (created 0600), or "-" for stdout.
	Path string
	// Required makes Record wait until its record is written and synced,
	// and fail when it cannot be.
	Required bool
	// Written is told how many records each batch wrote and how long the
	// write took, its fsync included in required mode (metrics).
	Written func(records int, took time.Duration)
	// Failed is told when a batch could not be written (the error names the
	// file, never a record).
	Failed func(error)
	// Key, when set, keys the chain: each line carries an HMAC-SHA256
	// under Key (not a plain SHA-256 anyone can recompute) and a sequence
	// number, and the trail writes checkpoints (EventCheckpoint). Keep
	// the key off the log host's reach; `keyd audit verify --key-file`
	// needs it.
	Key []byte
	// CheckpointInterval is how often a keyed trail writes a checkpoint
	// while records come (default a minute).
	CheckpointInterval time.Duration
	// Checkpoint is told each checkpoint written (its seq and MAC, hex):
	// keyd logs them, a second place to hold the trail to.
	Checkpoint func(seq uint64, mac string)
}

// maxQueued bounds the records waiting for the writer; Record blocks past
// it (back-pressure rather than unbounded memory or silent loss).
const maxQueued = 1 << 16

// Log is an open audit trail, safe for concurrent use.
type Log struct {
	opts   Options
	mu     sync.Mutex
	cur    *batch // records waiting for the writer
	kick   chan struct{}
	closed bool
	done   chan struct{}

	reopen  atomic.Bool // set by Reopen, done by the writer
	tickDue atomic.Bool // set by the checkpoint ticker, done by the writer

	// The writer's own state.
	w        io.Writer
	f        *os.File // nil for stdout
	last     [32]byte // hash (MAC, when keyed) of the last record written
	seq      uint64   // sequence number of the last record written (keyed)
	cpSeq    uint64   // seq of the last checkpoint
	opening  bool     // the next batch starts with an "open" checkpoint
	written  int64    // bytes written to stdout (no file to ask)
	stopTick chan struct{}
}

type batch struct {
	bodies [][]byte
	done   chan struct{}
	err    error
}

func newBatch() *batch { return &batch{done: make(chan struct{})} }

// Open opens the trail at o.Path, continuing the chain of the records
// already there, and starts its writer.
func Open(o Options) (*Log, error) {
	l := &Log{opts: o, cur: newBatch(), kick: make(chan struct{}, 1), done: make(chan struct{}), opening: o.Key != nil}
	if o.Key != nil && o.CheckpointInterval <= 0 {
		l.opts.CheckpointInterval = time.Minute
	}
	if o.Path == "-" {
		l.w = os.Stdout
	} else {
		f, err := os.OpenFile(o.Path, os.O_RDWR|os.O_APPEND|os.O_CREATE, 0o600)
		if err != nil {
			return nil, fmt.Errorf("audit.path: %w", err)
		}
		if err := l.resume(f); err != nil {
			f.Close()
			return nil, err
		}
		l.w, l.f = f, f
	}
	go l.run()
	if o.Key != nil {
		l.stopTick = make(chan struct{})
		go l.tick()
		l.wake() // the "open" checkpoint, at once
	}
	return l, nil
}

// tick wakes the writer every CheckpointInterval, for a checkpoint when
// records came since the last one.
func (l *Log) tick() {
	t := time.NewTicker(l.opts.CheckpointInterval)
	defer t.Stop()
	for {
		select {
		case <-l.stopTick:
			return
		case <-t.C:
			l.tickDue.Store(true)
			l.wake()
		}
	}
}

func (l *Log) wake() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.closed {
		l.wakeLocked()
	}
}

// resume sets the chain to go on from the last whole record in f (a
// regular file), if it has one; a partial last line (a crash during a
// write) is cut off.
func (l *Log) resume(f *os.File) error {
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("audit.path: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		if err := f.Chmod(0o600); err != nil {
			return fmt.Errorf("audit.path: %s has mode %04o and cannot be made 0600: %w", f.Name(), perm, err)
		}
	}
	var lastLine []byte
	var whole int64
	r := bufio.NewReaderSize(f, 64<<10)
	for {
		line, err := r.ReadBytes('\n')
		if err == io.EOF {
			break // a partial line, if any, is dropped below
		}
		if err != nil {
			return fmt.Errorf("audit.path: reading %s: %w", f.Name(), err)
		}
		whole += int64(len(line))
		lastLine = line
	}
	if whole != fi.Size() {
		if err := f.Truncate(whole); err != nil {
			return fmt.Errorf("audit.path: cutting a partial record off %s: %w", f.Name(), err)
		}
	}
	if lastLine != nil {
		ln, err := parseLine(bytes.TrimSuffix(lastLine, []byte("\n")), l.opts.Key)
		if err != nil {
			return fmt.Errorf("audit.path: the last record of %s does not verify (%v); keyd will not continue a chain it cannot read: move the file away", f.Name(), err)
		}
		l.last, l.seq = ln.mac, ln.seq
	}
	l.opening = l.opts.Key != nil
	return nil
}

// Record writes rec (its Time set to now if zero). In required mode it
// returns once the record is on disk, or an error wrapping ErrUnavailable;
// otherwise it returns at once (blocking only while too many records wait).
func (l *Log) Record(rec Record) error {
	return l.RecordAll(rec)
}

// Note writes rec without waiting for it, required mode or not: for
// events that refuse or change nothing a caller waits on (a failed
// verification, a refused caller, a rotation already stored). A failure
// to write is reported through Options.Failed.
func (l *Log) Note(rec Record) {
	_ = l.enqueue(false, rec)
}

// RecordAll writes recs in order, in one batch, as Record does for one.
func (l *Log) RecordAll(recs ...Record) error {
	return l.enqueue(l != nil && l.opts.Required, recs...)
}

func (l *Log) enqueue(wait bool, recs ...Record) error {
	if l == nil || len(recs) == 0 {
		return nil
	}
	bodies := make([][]byte, len(recs))
	for i := range recs {
		if recs[i].Time.IsZero() {
			recs[i].Time = time.Now().UTC()
		}
		recs[i].capFields()
		body, err := json.Marshal(&recs[i])
		if err != nil {
			return fmt.Errorf("%w: encoding a record: %v", ErrUnavailable, err)
		}
		bodies[i] = body
	}
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return fmt.Errorf("%w: closed", ErrUnavailable)
	}
	b := l.cur
	b.bodies = append(b.bodies, bodies...)
	full := len(b.bodies) >= maxQueued
	l.wakeLocked()
	l.mu.Unlock()
	if !wait && !full {
		return nil
	}
	<-b.done
	if wait {
		return b.err
	}
	return nil
}

// Reopen makes the writer open the path anew before its next batch, for
// an outside tool that renamed the file away: the new file's first record
// chains to the last record of the old one.
func (l *Log) Reopen() {
	if l == nil || l.f == nil {
		return
	}
	l.reopen.Store(true)
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.closed {
		l.wakeLocked()
	}
}

// wakeLocked tells the writer there is work, without waiting; the caller
// holds mu, so Close cannot close kick meanwhile.
func (l *Log) wakeLocked() {
	select {
	case l.kick <- struct{}{}:
	default:
	}
}

// reopenFile is Reopen's work, on the writer. When the path cannot be
// opened, the writer keeps the old file and the failure is reported.
func (l *Log) reopenFile() {
	f, err := os.OpenFile(l.opts.Path, os.O_RDWR|os.O_APPEND|os.O_CREATE, 0o600)
	if err == nil {
		err = l.resume(f) // an empty new file continues the old one's chain
	}
	if err != nil {
		if f != nil {
			f.Close()
		}
		if l.opts.Failed != nil {
			l.opts.Failed(fmt.Errorf("%w: reopening: %v", ErrUnavailable, err))
		}
		return
	}
	_ = l.f.Sync()
	_ = l.f.Close()
	l.w, l.f = f, f
}

// Close writes what is queued, syncs and closes the file.
func (l *Log) Close() error {
	if l == nil {
		return nil
	}
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	l.mu.Unlock()
	if l.stopTick != nil {
		close(l.stopTick)
	}
	close(l.kick)
	<-l.done
	if l.f != nil {
		err := l.f.Sync()
		if cerr := l.f.Close(); err == nil {
			err = cerr
		}
		return err
	}
	return nil
}

// run is the writer: it takes the waiting batch whenever there is one and
// writes it.
func (l *Log) run() {
	defer close(l.done)
	for {
		_, open := <-l.kick
		if l.reopen.Swap(false) {
			l.reopenFile()
		}
		l.mu.Lock()
		b := l.cur
		l.cur = newBatch()
		l.mu.Unlock()
		trigger := ""
		switch {
		case l.opts.Key == nil:
		case l.opening:
			trigger = "open"
		case !open && l.seq > l.cpSeq:
			trigger = "close"
		case l.tickDue.Swap(false) && l.seq > l.cpSeq:
			trigger = "interval"
		}
		if len(b.bodies) > 0 || trigger != "" {
			b.err = l.write(b.bodies, trigger)
		}
		close(b.done)
		if !open {
			return
		}
	}
}

// write chains and writes bodies in one write, syncing in required mode.
// A keyed trail puts a checkpoint first when trigger is set, or when the
// batch starts a file (offset 0: a new file, or one an outside tool
// truncated), so that every file begins with one. On failure nothing of
// the batch stays in the file and the chain goes on from the last record
// written.
func (l *Log) write(bodies [][]byte, trigger string) error {
	var buf bytes.Buffer
	last, seq := l.last, l.seq
	start := time.Now()
	var end int64 = -1
	if l.f != nil {
		end, _ = l.f.Seek(0, io.SeekEnd) // where this batch starts, even after an outside truncation
	} else {
		end = l.written
	}
	var cpMAC [32]byte
	cp := uint64(0)
	if l.opts.Key != nil && (trigger != "" || end == 0) {
		if end == 0 && trigger == "" {
			trigger = "file_start"
		}
		seq++
		body, _ := json.Marshal(&Record{Time: time.Now().UTC(), Event: EventCheckpoint, Trigger: trigger, Offset: end, Count: int(seq)})
		last = appendLine(&buf, last, body, l.opts.Key, seq)
		cp, cpMAC = seq, last
	}
	for _, body := range bodies {
		if l.opts.Key != nil {
			seq++
		}
		last = appendLine(&buf, last, body, l.opts.Key, seq)
	}
	_, err := l.w.Write(buf.Bytes())
	if err == nil && l.opts.Required && l.f != nil {
		err = l.f.Sync()
	}
	if err != nil {
		if end >= 0 && l.f != nil {
			_ = l.f.Truncate(end) // best effort: a partial batch must not stay
		}
		err = fmt.Errorf("%w: writing %s: %v", ErrUnavailable, l.opts.Path, err)
		if l.opts.Failed != nil {
			l.opts.Failed(err)
		}
		return err
	}
	l.last, l.seq, l.written = last, seq, end+int64(buf.Len())
	if cp != 0 {
		l.cpSeq, l.opening = cp, false
		if l.opts.Checkpoint != nil {
			l.opts.Checkpoint(cp, hex.EncodeToString(cpMAC[:]))
		}
	}
	if l.opts.Written != nil && len(bodies) > 0 {
		l.opts.Written(len(bodies), time.Since(start))
	}
	return nil
}

// appendLine writes one chained line for body (a JSON object) after the
// record whose hash is prev, and returns the new record's hash: the
// SHA-256 of the rest of the line, or with key its HMAC-SHA256, the line
// then carrying seq as well.
func appendLine(buf *bytes.Buffer, prev [32]byte, body []byte, key []byte, seq uint64) [32]byte {
	// rest = "prev":"<hex>",["seq":N,]<body members>}
	var rest bytes.Buffer
	rest.Grow(100 + len(body))
	rest.WriteString(`"prev":"`)
	rest.WriteString(hex.EncodeToString(prev[:]))
	rest.WriteString(`",`)
	if key != nil {
		fmt.Fprintf(&rest, `"seq":%d,`, seq)
	}
	rest.Write(body[1:])
	h := lineMAC(rest.Bytes(), key)
	if key != nil {
		buf.WriteString(macPrefix)
	} else {
		buf.WriteString(hashPrefix)
	}
	buf.WriteString(hex.EncodeToString(h[:]))
	buf.WriteString(`",`)
	buf.Write(rest.Bytes())
	buf.WriteByte('\n')
	return h
}

func lineMAC(rest, key []byte) (out [32]byte) {
	if key == nil {
		return sha256.Sum256(rest)
	}
	m := hmac.New(sha256.New, key)
	m.Write(rest)
	copy(out[:], m.Sum(nil))
	return out
}

const (
	hashPrefix = `{"hash":"`
	macPrefix  = `{"hmac":"`
)

// line is what a record's chain fields say.
type line struct {
	mac, prev  [32]byte
	keyed      bool
	seq        uint64
	checkpoint bool
	offset     int64
}

// parseLine checks one line's own hash (or, with key, its HMAC: a keyed
// line needs the key, and with a key every keyed line must verify under
// it) and returns its chain fields.
func parseLine(raw []byte, key []byte) (ln line, err error) {
	const n = len(hashPrefix) + 64 + 2 // {"hash":"<64 hex>",
	switch {
	case len(raw) >= n && bytes.HasPrefix(raw, []byte(macPrefix)):
		ln.keyed = true
	case len(raw) >= n && bytes.HasPrefix(raw, []byte(hashPrefix)):
	default:
		return ln, errors.New(`not an audit record (it must start with {"hash":"…", or {"hmac":"…",)`)
	}
	if string(raw[n-2:n]) != `",` {
		return ln, errors.New("not an audit record")
	}
	if _, err := hex.Decode(ln.mac[:], raw[len(hashPrefix):n-2]); err != nil {
		return ln, errors.New("its hash is not hex")
	}
	rest := raw[n:]
	switch {
	case ln.keyed && key == nil:
		return ln, errors.New("the record is keyed (HMAC): give the audit key (--key-file)")
	case ln.keyed && !hmac.Equal(ln.mac[:], sliceOf(lineMAC(rest, key))):
		return ln, errors.New("its content does not match its HMAC under the key: the record was altered, or the key is not this trail's")
	case !ln.keyed && sha256.Sum256(rest) != ln.mac:
		return ln, errors.New("its content does not match its hash: the record was altered")
	}
	var r struct {
		Prev   string `json:"prev"`
		Seq    uint64 `json:"seq"`
		Event  string `json:"event"`
		Offset int64  `json:"offset"`
	}
	if err := json.Unmarshal(append([]byte{'{'}, rest...), &r); err != nil {
		return ln, fmt.Errorf("it is not JSON: %v", err)
	}
	b, err := hex.DecodeString(r.Prev)
	if err != nil || len(b) != 32 {
		return ln, errors.New("its prev is not a SHA-256 in hex")
	}
	copy(ln.prev[:], b)
	ln.seq, ln.checkpoint, ln.offset = r.Seq, r.Event == EventCheckpoint, r.Offset
	return ln, nil
}

func sliceOf(a [32]byte) []byte { return a[:] }
