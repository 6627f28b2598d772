package file

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	bolt "go.etcd.io/bbolt"

	"github.com/keyd-dev/keyd/internal/storecodec"
)

// KeyID names a master key without revealing it: the first 8 bytes of a
// SHA-256 of the key under a label, in hex. keyd writes it in the file, so
// that a wrong key is told apart from the right one by name.
func KeyID(key []byte) string {
	sum := sha256.Sum256(append([]byte("keyd master key id\x00"), key...))
	return hex.EncodeToString(sum[:8])
}

// RekeyStats counts what Rekey sealed again.
type RekeyStats struct {
	KeySets, Keys, Records int
}

// rekeyBatch is how many values go into one transaction of the new file.
const rekeyBatch = 10_000

// Rekey seals every sealed value of the database at path under newKey
// instead of oldKey: key material, records, the key check. It writes a new
// file beside it (path + ".rekey", with bounded memory: commits of
// rekeyBatch values), syncs it, and renames it over path. Killed at any
// moment, path is the old file whole (oldKey opens it; the half-written
// new file is removed by the next Rekey) or the new one whole (newKey
// opens it). It holds the old file's lock throughout, so it fails with
// ErrLocked while keyd runs on it, and afterwards only newKey opens path.
func Rekey(path string, oldKey, newKey []byte) (RekeyStats, error) {
	var st RekeyStats
	if len(newKey) != MasterKeySize {
		return st, ErrBadMasterKey
	}
	if KeyID(oldKey) == KeyID(newKey) {
		return st, errors.New("the new master key is the one in use")
	}
	if _, err := os.Stat(path); err != nil {
		return st, err // Open would make an empty database
	}
	old, err := Open(Options{Path: path, MasterKey: oldKey})
	if err != nil {
		return st, err
	}
	defer func() { _ = old.Close() }()
	tmp := path + ".rekey"
	if err := os.Remove(tmp); err != nil && !errors.Is(err, os.ErrNotExist) {
		return st, err
	}
	fresh, err := Open(Options{Path: tmp, MasterKey: newKey})
	if err != nil {
		return st, err
	}
	err = old.db.View(func(tx *bolt.Tx) error { return copySealed(tx, old, fresh, &st) })
	if cerr := fresh.Close(); err == nil { // bbolt syncs every commit
		err = cerr
	}
	if err != nil {
		_ = os.Remove(tmp)
		return st, err
	}
	if err := os.Rename(tmp, path); err != nil {
		return st, err
	}
	return st, syncDir(filepath.Dir(path))
}

// copySealed writes what tx holds into to, opened by from's key and sealed
// by to's.
func copySealed(tx *bolt.Tx, from, to *Store, st *RekeyStats) error {
	if err := tx.ForEach(func(name []byte, _ *bolt.Bucket) error {
		switch string(name) {
		case string(bucketMeta), string(bucketKeySets), string(bucketRecords):
			return nil
		}
		return fmt.Errorf("unknown bucket %q in the database: this keyd cannot seal it again", name)
	}); err != nil {
		return err
	}
	w := &batchWriter{db: to.db}
	err := tx.Bucket(bucketKeySets).ForEach(func(k, raw []byte) error {
		r, err := storecodec.Unmarshal(raw)
		if err != nil {
			return err
		}
		for i, kr := range r.Keys {
			plain, err := from.open(kr.Material, storecodec.AAD(r.Name, kr.ID))
			if err != nil {
				return fmt.Errorf("key set %s key %s: material does not open", r.Name, kr.ID)
			}
			if r.Keys[i].Material, err = to.seal(plain, storecodec.AAD(r.Name, kr.ID)); err != nil {
				return err
			}
			st.Keys++
		}
		st.KeySets++
		return w.put([]byte(k), nil, r)
	})
	if err != nil {
		return err
	}
	err = tx.Bucket(bucketRecords).ForEachBucket(func(kind []byte) error {
		return tx.Bucket(bucketRecords).Bucket(kind).ForEach(func(id, raw []byte) error {
			if len(raw) < 8 {
				return fmt.Errorf("record %s %s is truncated", kind, id)
			}
			plain, err := from.open(raw[8:], recordAAD(string(kind), string(id)))
			if err != nil {
				return fmt.Errorf("record %s %s does not open", kind, id)
			}
			sealed, err := to.seal(plain, recordAAD(string(kind), string(id)))
			if err != nil {
				return err
			}
			st.Records++
			return w.put(id, kind, append(append([]byte(nil), raw[:8]...), sealed...))
		})
	})
	if err != nil {
		return err
	}
	return w.flush()
}

// batchWriter puts values into a bbolt file rekeyBatch at a time: a key
// set's record (kind nil, value a *storecodec.Record) or a record of a
// kind (value its stored bytes).
type batchWriter struct {
	db      *bolt.DB
	pending []pendingPut
}

type pendingPut struct {
	key, kind []byte
	value     any
}

func (w *batchWriter) put(key, kind []byte, value any) error {
	w.pending = append(w.pending, pendingPut{append([]byte(nil), key...), append([]byte(nil), kind...), value})
	if len(w.pending) < rekeyBatch {
		return nil
	}
	return w.flush()
}

func (w *batchWriter) flush() error {
	err := w.db.Update(func(tx *bolt.Tx) error {
		for _, p := range w.pending {
			if r, ok := p.value.(*storecodec.Record); ok {
				raw, err := marshalRecord(r)
				if err != nil {
					return err
				}
				if err := tx.Bucket(bucketKeySets).Put(p.key, raw); err != nil {
					return err
				}
				continue
			}
			b, err := tx.Bucket(bucketRecords).CreateBucketIfNotExists(p.kind)
			if err != nil {
				return err
			}
			if err := b.Put(p.key, p.value.([]byte)); err != nil {
				return err
			}
		}
		return nil
	})
	w.pending = w.pending[:0]
	return err
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
