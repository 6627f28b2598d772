package redis

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"

	goredis "github.com/redis/go-redis/v9"

	"github.com/keyd-dev/keyd/keystore"
)

// Records is a keystore.RecordStore on Redis, for the records of token
// state (refresh token logins and subject cut-offs): each record one key
// holding its version and data, written by a Lua compare-and-swap so that
// replicas racing on one login have exactly one winner, and expired by
// Redis itself at the record's Expires (no sweeps).
type Records struct{ s *Store }

var _ keystore.RecordStore = Records{}

// ExpiresRecords implements keystore.RecordExpirer: each record's key
// expires at the record's Expires.
func (Records) ExpiresRecords() bool { return true }

// Records returns the record store on the same connection and prefix.
func (s *Store) Records() Records { return Records{s: s} }

func (r Records) key(kind, id string) string { return r.s.prefix + "rec:" + kind + ":" + id }

// cas writes ARGV[2] (version ++ data) if the stored version is ARGV[1]
// (0: the key must not exist), with the expiry ARGV[3] (ms; 0: none). A
// key that already holds exactly ARGV[2], which carries the write's own
// random id, is this very write, landed before (the client retries a
// command whose answer it lost while Redis stalled): it answers the
// version as if it had just written it, never a conflict.
var cas = goredis.NewScript(`
local cur = redis.call('GET', KEYS[1])
local want = tonumber(ARGV[1])
local have = 0
if cur then have = struct.unpack('>I8', cur) end
if cur == ARGV[2] then return have end
if have ~= want then return -1 end
local exp = tonumber(ARGV[3])
if exp > 0 then
  redis.call('SET', KEYS[1], ARGV[2], 'PXAT', exp)
else
  redis.call('SET', KEYS[1], ARGV[2])
end
return have + 1
`)

// GetRecord implements keystore.RecordStore.
func (r Records) GetRecord(ctx context.Context, kind, id string) (*keystore.Record, error) {
	key := r.key(kind, id)
	raw, err := r.s.pl.do(func(p goredis.Pipeliner) goredis.Cmder { return p.Get(ctx, key) }).(*goredis.StringCmd).Bytes()
	if errors.Is(err, goredis.Nil) {
		return nil, fmt.Errorf("%w: record %s %s", keystore.ErrNotFound, kind, id)
	}
	if err != nil {
		return nil, unavailable(err)
	}
	return decode(kind, id, raw)
}

// A stored record is its version (8 bytes, big-endian), then writeMark
// and the 16 random bytes that name the write that stored it, then its
// data. Records written before the mark existed are version and data
// alone (their data never starts with 0xFF: JSON or sealed).
const (
	writeMark   = 0xFF
	writeIDSize = 16
)

func decode(kind, id string, raw []byte) (*keystore.Record, error) {
	if len(raw) < 8 {
		return nil, fmt.Errorf("%w: record %s %s is truncated", keystore.ErrCorrupt, kind, id)
	}
	data := raw[8:]
	if len(data) > 0 && data[0] == writeMark {
		if len(data) < 1+writeIDSize {
			return nil, fmt.Errorf("%w: record %s %s is truncated", keystore.ErrCorrupt, kind, id)
		}
		data = data[1+writeIDSize:]
	}
	return &keystore.Record{ID: id, Version: binary.BigEndian.Uint64(raw), Data: append([]byte(nil), data...)}, nil
}

// PutRecord implements keystore.RecordStore.
func (r Records) PutRecord(ctx context.Context, kind string, rec *keystore.Record) (*keystore.Record, error) {
	if kind == "" || rec.ID == "" {
		return nil, errors.New("a record needs a kind and an id")
	}
	next := rec.Version + 1
	// The write's own id makes the value unique to this call: a retry of
	// it (the same command re-sent) finds it stored and is this write;
	// another writer with the same data is not (two replicas spending one
	// refresh token write the same next generation).
	val := append(binary.BigEndian.AppendUint64(nil, next), writeMark)
	val = append(val, make([]byte, writeIDSize)...)
	_, _ = rand.Read(val[9 : 9+writeIDSize])
	val = append(val, rec.Data...)
	var exp int64
	if !rec.Expires.IsZero() {
		exp = rec.Expires.UnixMilli()
	}
	got, err := r.s.script(ctx, cas, []string{r.key(kind, rec.ID)}, rec.Version, val, exp).Int64()
	if err != nil {
		return nil, unavailable(err)
	}
	if got < 0 {
		return nil, fmt.Errorf("%w: record %s %s was written by someone else", keystore.ErrConflict, kind, rec.ID)
	}
	return &keystore.Record{ID: rec.ID, Data: append([]byte(nil), rec.Data...), Version: uint64(got), Expires: rec.Expires}, nil
}

// DeleteRecord implements keystore.RecordStore.
func (r Records) DeleteRecord(ctx context.Context, kind, id string) error {
	return unavailable(r.s.c.Del(ctx, r.key(kind, id)).Err())
}

// ListRecords implements keystore.RecordStore (a SCAN).
func (r Records) ListRecords(ctx context.Context, kind string) ([]*keystore.Record, error) {
	prefix := r.key(kind, "")
	var out []*keystore.Record
	err := r.s.scan(ctx, prefix+"*", func(key, val string) error {
		rec, err := decode(kind, key[len(prefix):], []byte(val))
		if err != nil {
			return err
		}
		out = append(out, rec)
		return nil
	})
	return out, err
}
