// Package file is keyd's embedded store: every key set in one bbolt file,
// private key material sealed with AES-256-GCM under a 32-byte master key.
//
// The file is created with mode 0600 and held under bbolt's exclusive lock,
// so a second process on the same file fails fast with ErrLocked. Each Put is
// one bbolt transaction, fsynced before it returns, so a crash at any moment
// leaves either the old or the new key set, never a mix. Concurrent writes
// are batched into one transaction (bbolt's Batch), each still all or
// nothing. A check value
// sealed under the master key when the file is created makes a wrong master
// key a clear error (ErrWrongMasterKey) at Open, not garbage keys later.
package file

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/keyd-dev/keyd/internal/storecodec"
	"github.com/keyd-dev/keyd/keystore"
)

var (
	// ErrLocked means another process holds the db file open.
	ErrLocked = errors.New("database file is locked by another process")
	// ErrWrongMasterKey means the db was created under another master key.
	ErrWrongMasterKey = errors.New("master key does not open this database")
	// ErrBadMasterKey means the master key is not base64 of 32 bytes.
	ErrBadMasterKey = errors.New("master key must be base64 of exactly 32 bytes")
)

// MasterKeySize is the AES-256 key length in bytes.
const MasterKeySize = 32

// DefaultLockTimeout is how long Open waits for another process's lock.
const DefaultLockTimeout = time.Second

var (
	bucketMeta    = []byte("meta")
	bucketKeySets = []byte("keysets")
	bucketRecords = []byte("records") // holds one bucket per record kind
	keyFormat     = []byte("format")
	keyCheck      = []byte("master_key_check")
	keyMasterID   = []byte("master_key_id") // KeyID of the master key, to name it in errors
)

const (
	formatVersion = "1"
	checkValue    = "keyd master key check"
)

// Options configure Open.
type Options struct {
	Path        string        // the db file; its folder is made (0700) if missing
	MasterKey   []byte        // 32 bytes; see ParseMasterKey
	LockTimeout time.Duration // default DefaultLockTimeout
}

// Store is a keystore.Store in one bbolt file.
type Store struct {
	db    *bolt.DB
	aead  cipher.AEAD
	keyID string
	prk   []byte // HKDF-SHA256 of the master key, for DeriveKey
}

var (
	_ keystore.Store       = (*Store)(nil)
	_ keystore.RecordStore = (*Store)(nil)
)

// ReleaseMapped tells the kernel that keyd no longer needs the pages of
// the database file it has read through bbolt's memory mapping: after the
// start-up load of a million revocations they are some 380 MiB of keyd's
// RSS that nothing reads again soon. They stay in the page cache and are
// mapped again when read. It runs inside a read transaction, which keeps
// bbolt from moving its mapping meanwhile.
func (s *Store) ReleaseMapped() error {
	return s.db.View(func(tx *bolt.Tx) error {
		return dontNeed(s.db.Info().Data, int(tx.Size()))
	})
}

// DeriveKey implements keystore.KeyDeriver: a 32-byte key for purpose,
// derived from the master key (HKDF-SHA256), the same in every process
// that holds the same master key.
func (s *Store) DeriveKey(purpose string) ([]byte, error) {
	return hkdf.Expand(sha256.New, s.prk, "keyd/"+purpose, 32)
}

// ParseMasterKey decodes a base64 (standard or URL alphabet, padding
// optional, surrounding white space ignored) 32-byte master key.
func ParseMasterKey(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(s); err == nil {
			if len(b) != MasterKeySize {
				return nil, fmt.Errorf("%w (it decodes to %d bytes)", ErrBadMasterKey, len(b))
			}
			return b, nil
		}
	}
	return nil, fmt.Errorf("%w (it is not valid base64)", ErrBadMasterKey)
}

// NewMasterKey returns a fresh random master key, base64-encoded.
func NewMasterKey() (string, error) {
	b := make([]byte, MasterKeySize)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return base64.StdEncoding.EncodeToString(b), nil
}

// Open opens or creates the db file.
func Open(opts Options) (*Store, error) {
	if len(opts.MasterKey) != MasterKeySize {
		return nil, ErrBadMasterKey
	}
	block, err := aes.NewCipher(opts.MasterKey)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	if opts.LockTimeout <= 0 {
		opts.LockTimeout = DefaultLockTimeout
	}
	if err := os.MkdirAll(filepath.Dir(opts.Path), 0o700); err != nil {
		return nil, fmt.Errorf("create folder for %s: %w", opts.Path, err)
	}
	db, err := bolt.Open(opts.Path, 0o600, &bolt.Options{Timeout: opts.LockTimeout})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, fmt.Errorf("%w: %s (is another keyd running on it?)", ErrLocked, opts.Path)
	}
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", opts.Path, err)
	}
	// bbolt applies the mode only when it creates the file; tighten a file
	// that was created or copied with a looser one.
	if err := os.Chmod(opts.Path, 0o600); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("chmod %s: %w", opts.Path, err)
	}
	// Concurrent writes (key sets created at start, refreshes) share one
	// transaction and one fsync; a lone write waits at most this long for
	// company.
	db.MaxBatchDelay = time.Millisecond
	prk, err := hkdf.Extract(sha256.New, opts.MasterKey, []byte("keyd master key"))
	if err != nil {
		_ = db.Close()
		return nil, err
	}
	s := &Store{db: db, aead: aead, keyID: KeyID(opts.MasterKey), prk: prk}
	if err := s.init(); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("%s: %w", opts.Path, err)
	}
	return s, nil
}

// init creates the buckets and the master key check on a new file, and
// checks the master key on an existing one.
func (s *Store) init() error {
	return s.db.Update(func(tx *bolt.Tx) error {
		meta, err := tx.CreateBucketIfNotExists(bucketMeta)
		if err != nil {
			return err
		}
		if _, err := tx.CreateBucketIfNotExists(bucketKeySets); err != nil {
			return err
		}
		if _, err := tx.CreateBucketIfNotExists(bucketRecords); err != nil {
			return err
		}
		if f := meta.Get(keyFormat); f != nil && string(f) != formatVersion {
			return fmt.Errorf("unknown file format %q (this keyd reads %q)", f, formatVersion)
		}
		check := meta.Get(keyCheck)
		if check == nil {
			sealed, err := s.seal([]byte(checkValue), keyCheck)
			if err != nil {
				return err
			}
			if err := meta.Put(keyFormat, []byte(formatVersion)); err != nil {
				return err
			}
			if err := meta.Put(keyMasterID, []byte(s.keyID)); err != nil {
				return err
			}
			return meta.Put(keyCheck, sealed)
		}
		plain, err := s.open(check, keyCheck)
		if err != nil || string(plain) != checkValue {
			if id := meta.Get(keyMasterID); id != nil {
				return fmt.Errorf("%w (it is sealed under the master key of id %s; the key given has id %s: keyd master-key id shows a key's)", ErrWrongMasterKey, id, s.keyID)
			}
			return ErrWrongMasterKey
		}
		if string(meta.Get(keyMasterID)) != s.keyID { // files from before ids
			return meta.Put(keyMasterID, []byte(s.keyID))
		}
		return nil
	})
}

// Close closes the db file and releases its lock.
func (s *Store) Close() error { return s.db.Close() }

// Get implements keystore.Store.
func (s *Store) Get(ctx context.Context, name string) (*keystore.KeySet, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var ks *keystore.KeySet
	err := s.db.View(func(tx *bolt.Tx) error {
		raw := tx.Bucket(bucketKeySets).Get([]byte(name))
		if raw == nil {
			return fmt.Errorf("%w: %s", keystore.ErrNotFound, name)
		}
		var err error
		ks, err = s.decode(raw)
		return err
	})
	return ks, s.wrap(err)
}

// List implements keystore.Store. bbolt iterates keys in byte order, which
// is name order.
func (s *Store) List(ctx context.Context) ([]*keystore.KeySet, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var out []*keystore.KeySet
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketKeySets).ForEach(func(_, raw []byte) error {
			ks, err := s.decode(raw)
			if err != nil {
				return err
			}
			out = append(out, ks)
			return nil
		})
	})
	return out, s.wrap(err)
}

// Put implements keystore.Store.
func (s *Store) Put(ctx context.Context, ks *keystore.KeySet) (*keystore.KeySet, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := ks.Check(); err != nil {
		return nil, err
	}
	out := ks.Clone()
	// Batch may run fn again, alone, if another write of its batch fails:
	// it reads the version inside, so running it again is safe.
	err := s.db.Batch(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketKeySets)
		var current uint64
		if raw := b.Get([]byte(ks.Name)); raw != nil {
			r, err := storecodec.Unmarshal(raw)
			if err != nil {
				return err
			}
			current = r.Version
		}
		if current != ks.Version {
			return fmt.Errorf("%w: %s is at version %d, write was based on %d", keystore.ErrConflict, ks.Name, current, ks.Version)
		}
		out.Version = current + 1
		raw, err := s.encode(out)
		if err != nil {
			return err
		}
		return b.Put([]byte(ks.Name), raw)
	})
	if err != nil {
		return nil, s.wrap(err)
	}
	return out, nil
}

// wrap marks bbolt's own faults as ErrUnavailable and passes keyd's errors
// through.
func (s *Store) wrap(err error) error {
	if err == nil {
		return nil
	}
	for _, known := range []error{keystore.ErrNotFound, keystore.ErrConflict, keystore.ErrCorrupt, context.Canceled, context.DeadlineExceeded} {
		if errors.Is(err, known) {
			return err
		}
	}
	return fmt.Errorf("%w: %w", keystore.ErrUnavailable, err)
}

func (s *Store) encode(ks *keystore.KeySet) ([]byte, error) {
	r, err := storecodec.Encode(ks, s.seal)
	if err != nil {
		return nil, err
	}
	return marshalRecord(r)
}

func marshalRecord(r *storecodec.Record) ([]byte, error) { return json.Marshal(r) }

// decode copies everything out of raw, which bbolt owns only for the
// transaction.
func (s *Store) decode(raw []byte) (*keystore.KeySet, error) {
	r, err := storecodec.Unmarshal(raw)
	if err != nil {
		return nil, err
	}
	return r.Decode(s.open)
}

func (s *Store) seal(plain, aad []byte) ([]byte, error) {
	nonce := make([]byte, s.aead.NonceSize(), s.aead.NonceSize()+len(plain)+s.aead.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	return s.aead.Seal(nonce, nonce, plain, aad), nil
}

func (s *Store) open(sealed, aad []byte) ([]byte, error) {
	n := s.aead.NonceSize()
	if len(sealed) < n {
		return nil, errors.New("sealed value too short")
	}
	return s.aead.Open(nil, sealed[:n], sealed[n:], aad)
}
