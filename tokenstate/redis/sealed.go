package redis

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"strings"
	"sync/atomic"

	goredis "github.com/redis/go-redis/v9"

	"github.com/keyd-dev/keyd/keystore"
	"github.com/keyd-dev/keyd/tokenstate"
)

// Sealer seals the revocation entries a Store writes, bound to their id
// (tokenstate/sealed's key, kept in keyd's key store): Seal makes the
// stored value of an entry's JSON, Open returns the JSON of a stored
// value, or false when keyd did not seal it for that id.
type Sealer interface {
	Seal(id string, plain []byte) []byte
	Open(id string, stored []byte) ([]byte, bool)
}

// SealWith makes s seal every entry it writes and publishes with sl, and
// refuse as forged any entry it reads or hears that sl did not seal
// (rejected, nil for none, is told of each): a Redis writer can then add
// no revocation keyd accepts, and a Redis reader learns no subject. The
// merge of an entry with the stored one then happens in keyd, written
// back with compare-and-swap. Call it before anything else; see SealOld
// for the entries written before.
func (s *Store) SealWith(sl Sealer, rejected func()) {
	s.sealer, s.rejected = sl, rejected
}

// putSealed writes the sealed entry ARGV[1] if the stored value is still
// ARGV[4] (what keyd merged it with; ” for none), indexes it under id
// ARGV[3] with its expiry ARGV[5], and publishes "id value" on channel
// ARGV[2] (unless empty); else it writes nothing and returns false.
var putSealed = goredis.NewScript(`
local cur = redis.call('GET', KEYS[1])
if (cur or '') ~= ARGV[4] then return false end
redis.call('SET', KEYS[1], ARGV[1], 'PXAT', ARGV[5])
redis.call('ZADD', KEYS[2], ARGV[5], ARGV[3])
if ARGV[2] ~= '' then redis.call('PUBLISH', ARGV[2], ARGV[3] .. ' ' .. ARGV[1]) end
return 1
`)

// maxSealedAttempts bounds the compare-and-swap retries of one write.
const maxSealedAttempts = 10

// putRevocationSealed merges r into the stored entry in keyd and writes
// the sealed result if nobody wrote the entry meanwhile, retrying on fresh
// state. A retried write (go-redis resends on a lost answer) that landed
// finds its own value and merges it again: merging is idempotent.
func (s *Store) putRevocationSealed(ctx context.Context, r tokenstate.Revocation, channel string) (tokenstate.Revocation, error) {
	id, key := r.ID(), s.key(r)
	// Writes of one entry take turns in this process (a subject revoked
	// from many requests at once); compare-and-swap guards against the
	// other replicas.
	h := fnv.New32a()
	h.Write([]byte(id))
	mu := &s.entryLocks[h.Sum32()%uint32(len(s.entryLocks))]
	mu.Lock()
	defer mu.Unlock()
	for range maxSealedAttempts {
		cur, err := s.pl.do(func(p goredis.Pipeliner) goredis.Cmder { return p.Get(ctx, key) }).(*goredis.StringCmd).Result()
		if err != nil && !errors.Is(err, goredis.Nil) {
			return tokenstate.Revocation{}, unavailable(err)
		}
		merged := r
		if cur != "" {
			if old, ok := s.open(id, cur); ok {
				merged = old.Merge(r)
			}
		}
		plain, _ := json.Marshal(toEntry(merged))
		val := s.sealer.Seal(id, plain)
		err = s.script(ctx, putSealed, []string{key, s.index()}, val, channel, id, cur, merged.Expires.UnixMilli()).Err()
		if errors.Is(err, goredis.Nil) {
			continue // written by another meanwhile
		}
		if err != nil {
			return tokenstate.Revocation{}, unavailable(err)
		}
		return merged, nil
	}
	return tokenstate.Revocation{}, fmt.Errorf("%w: revocation %s: written by others %d times while keyd merged it", keystore.ErrConflict, id, maxSealedAttempts)
}

// open returns the revocation of the stored value v of entry id, false
// (and counted) when keyd did not seal it.
func (s *Store) open(id, v string) (tokenstate.Revocation, bool) {
	plain, ok := s.sealer.Open(id, []byte(v))
	var e entry
	if ok && json.Unmarshal(plain, &e) == nil {
		if r := e.revocation(); r.ID() == id {
			return r, true
		}
	}
	if s.rejected != nil {
		s.rejected()
	}
	return tokenstate.Revocation{}, false
}

// decode returns the revocation of a stored value of the entry key (or of
// a published message, when key is ""): opened when s seals, false when
// refused; an error only for an unsealed store's entry that does not
// parse.
func (s *Store) decode(key, v string) (tokenstate.Revocation, bool, error) {
	if s.sealer == nil {
		var e entry
		if err := json.Unmarshal([]byte(v), &e); err != nil {
			return tokenstate.Revocation{}, false, fmt.Errorf("%w: redis revocation: %v", keystore.ErrCorrupt, err)
		}
		return e.revocation(), true, nil
	}
	id := strings.TrimPrefix(key, s.entryKey(""))
	if key == "" { // a published message: "id value"
		var ok bool
		if id, v, ok = strings.Cut(v, " "); !ok {
			if s.rejected != nil {
				s.rejected()
			}
			return tokenstate.Revocation{}, false, nil
		}
	}
	r, ok := s.open(id, v)
	return r, ok, nil
}

// SealOld seals the entries written before sealing (JSON in clear), once:
// each is written again sealed with compare-and-swap, not published. An
// entry neither sealed nor JSON is left, and refused when read. keyd runs
// it once per Redis and remembers that in its key store: after it an
// unsealed entry is refused like a forged one, so every replica must run a
// sealing keyd (stop the older ones first). It returns how many it sealed.
func (s *Store) SealOld(ctx context.Context) (int, error) {
	if err := s.migrate(ctx); err != nil {
		return 0, err
	}
	var n atomic.Int64
	err := s.readIndex(ctx, func(keys, vals []string) error {
		errs := make([]error, len(keys))
		for i, v := range vals {
			var e entry
			if !strings.HasPrefix(v, "{") || json.Unmarshal([]byte(v), &e) != nil {
				continue
			}
			r := e.revocation()
			plain, _ := json.Marshal(e)
			err := s.script(ctx, putSealed, []string{keys[i], s.index()}, s.sealer.Seal(r.ID(), plain), "", r.ID(), v, e.ExpiresMS).Err()
			if err != nil && !errors.Is(err, goredis.Nil) { // Nil: rewritten meanwhile, by a sealing keyd
				errs[i] = unavailable(err)
				continue
			}
			n.Add(1)
		}
		return errors.Join(errs...)
	})
	return int(n.Load()), err
}
