package tokenstate

import (
	"cmp"
	"encoding/binary"
	"encoding/json"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/keyd-dev/keyd/tokencheck"
)

// Index is the revocations in force, in memory, for the checks of every
// verification: sharded maps under read locks, so that checks run in
// parallel and an addition locks one shard only. Safe for concurrent use.
//
// It is made to hold millions of entries cheaply: each is keyed by a
// digest of its jti or subject (Digest) and holds only numbers, and the
// strings (the jti or subject, the reason) live in one byte arena per
// shard, so that neither the maps nor the arenas hold a pointer. The
// garbage collector never scans them: verification costs the same with
// none or a million in force, and an entry takes about 100 bytes.
type Index struct {
	shards [64]shard

	mu   sync.Mutex // guards numbering key sets
	ids  sync.Map   // key set name -> uint32
	next uint32     // the next key set's number
	sets sync.Map   // key set number -> *setStats
	now  func() time.Time
}

// DigestSize is the bytes of Digest.
const DigestSize = tokencheck.RevocationDigestSize

// Digest names a jti or subject in the index and in published revocation
// lists: the first 12 bytes of its SHA-256 (two different ones share it
// with a chance of 2^-96), as tokencheck.RevocationDigest.
func Digest(s string) [DigestSize]byte { return tokencheck.RevocationDigest(s) }

type key struct {
	set uint32
	d   [DigestSize]byte
}

// entry is an entry without its strings: times are Unix nanoseconds (0:
// none), the jti or subject and the reason are at off in the shard's
// arena.
type entry struct {
	expires, before, revokedAt int64
	off                        uint32
	vLen, rLen                 uint16
}

type shard struct {
	mu    sync.RWMutex
	jtis  map[key]entry
	subs  map[key]entry
	arena []byte
	dead  int // arena bytes no entry uses any more
}

// setStats are one key set's count, version and recent entries.
type setStats struct {
	count   atomic.Int64
	version atomic.Uint64 // bumped on every change: the revocation list is re-signed

	mu       sync.Mutex
	horizon  time.Duration // how far back recent reaches; 0: DefaultHorizon
	recent   []logged      // entries revoked within the horizon, by RevokedAt once sorted
	unsorted bool          // an entry came out of order: sort before reading
}

// logged is an entry of a key set's recent log: enough to find it again.
type logged struct {
	at      int64 // RevokedAt, Unix nanoseconds
	k       key
	subject bool
}

// DefaultHorizon is how far back Since reaches unless SetHorizon says
// otherwise: a verifier whose copy is older gets the whole list.
const DefaultHorizon = time.Hour

// NewIndex returns an empty index.
func NewIndex() *Index {
	x := &Index{now: time.Now}
	for i := range x.shards {
		x.shards[i].jtis = map[key]entry{}
		x.shards[i].subs = map[key]entry{}
	}
	return x
}

// id returns the key set's number, giving it one if it has none.
func (x *Index) id(keyset string) uint32 {
	if id, ok := x.ids.Load(keyset); ok {
		return id.(uint32)
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	if id, ok := x.ids.Load(keyset); ok {
		return id.(uint32)
	}
	id := x.next
	x.next++
	x.ids.Store(keyset, id)
	x.sets.Store(id, new(setStats))
	return id
}

func (x *Index) shard(k key) *shard {
	return &x.shards[binary.LittleEndian.Uint64(k.d[:8])%uint64(len(x.shards))]
}

func (x *Index) stats(id uint32) *setStats {
	s, _ := x.sets.Load(id)
	return s.(*setStats)
}

func keyOf(id uint32, r Revocation) key {
	if r.IsSubject() {
		return key{id, Digest(r.Subject)}
	}
	return key{id, Digest(r.JTI)}
}

func nanos(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func timeOf(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}

// store puts r at k in m, its strings appended to the arena (those of
// the entry it replaces become dead).
func (sh *shard) store(m map[key]entry, k key, r Revocation, old entry, had bool) {
	v := r.JTI
	if r.IsSubject() {
		v = r.Subject
	}
	reason := r.Reason
	if len(reason) > 0xffff {
		reason = reason[:0xffff]
	}
	e := entry{expires: nanos(r.Expires), before: nanos(r.Before), revokedAt: nanos(r.RevokedAt)}
	if had && int(old.vLen) == len(v) && string(sh.arena[old.off:old.off+uint32(old.vLen)+uint32(old.rLen)]) == v+reason {
		e.off, e.vLen, e.rLen = old.off, old.vLen, old.rLen // the same strings: kept where they are
	} else {
		if had {
			sh.dead += int(old.vLen) + int(old.rLen)
		}
		e.off, e.vLen, e.rLen = uint32(len(sh.arena)), uint16(min(len(v), 0xffff)), uint16(len(reason))
		sh.arena = append(append(sh.arena, v[:e.vLen]...), reason...)
	}
	m[k] = e
}

// revocation rebuilds the entry at k of the key set called keyset.
func (sh *shard) revocation(keyset string, e entry, subject bool) Revocation {
	v := string(sh.arena[e.off : e.off+uint32(e.vLen)])
	r := Revocation{KeySet: keyset, Expires: timeOf(e.expires), Before: timeOf(e.before), RevokedAt: timeOf(e.revokedAt),
		Reason: string(sh.arena[e.off+uint32(e.vLen) : e.off+uint32(e.vLen)+uint32(e.rLen)])}
	if subject {
		r.Subject = v
	} else {
		r.JTI = v
	}
	return r
}

// compact rewrites the arena without its dead bytes, once they are most
// of it. Callers hold sh.mu.
func (sh *shard) compact() {
	if sh.dead < 4096 || sh.dead < len(sh.arena)/2 {
		return
	}
	arena := make([]byte, 0, len(sh.arena)-sh.dead)
	for _, m := range []map[key]entry{sh.jtis, sh.subs} {
		for k, e := range m {
			n := uint32(e.vLen) + uint32(e.rLen)
			off := uint32(len(arena))
			arena = append(arena, sh.arena[e.off:e.off+n]...)
			e.off = off
			m[k] = e
		}
	}
	sh.arena, sh.dead = arena, 0
}

// Add puts r in the index (merged with an entry for the same token or
// subject). When the key set has max entries already and r is new, it
// refuses with ErrLimit; max <= 0 is no limit.
func (x *Index) Add(r Revocation, max int) error {
	id := x.id(r.KeySet)
	k := keyOf(id, r)
	st := x.stats(id)
	sh := x.shard(k)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	m := sh.entries(r.IsSubject())
	cur, ok := m[k]
	if ok {
		r = sh.revocation(r.KeySet, cur, r.IsSubject()).Merge(r)
	} else if max > 0 && st.count.Load() >= int64(max) {
		return ErrLimit
	}
	sh.store(m, k, r, cur, ok)
	if !ok {
		st.count.Add(1)
	}
	st.version.Add(1)
	st.log(k, r, x.now())
	return nil
}

// log records r in the key set's recent entries if it was revoked within
// the horizon. Entries mostly come in RevokedAt order; those that do not
// (a replica's, a whole store read at start in its own order) mark the
// log for one sort before it is next read, instead of an insertion each.
func (st *setStats) log(k key, r Revocation, now time.Time) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if r.RevokedAt.Before(now.Add(-st.reach())) {
		return
	}
	at := r.RevokedAt.UnixNano()
	if n := len(st.recent); n > 0 && st.recent[n-1].at > at {
		st.unsorted = true
	}
	st.recent = append(st.recent, logged{at: at, k: k, subject: r.IsSubject()})
}

// sorted puts the log in RevokedAt order. Callers hold st.mu.
func (st *setStats) sorted() []logged {
	if st.unsorted {
		slices.SortStableFunc(st.recent, func(a, b logged) int { return cmp.Compare(a.at, b.at) })
		st.unsorted = false
	}
	return st.recent
}

func (st *setStats) reach() time.Duration { return cmp.Or(st.horizon, DefaultHorizon) }

// SetHorizon sets how far back Since reaches for the key set (a verifier
// polling every jwks_max_age should stay well within it).
func (x *Index) SetHorizon(keyset string, d time.Duration) {
	st := x.stats(x.id(keyset))
	st.mu.Lock()
	defer st.mu.Unlock()
	st.horizon = d
}

// SetClock sets what the index reads the time from (time.Now by default),
// for the horizon of its recent entries.
func (x *Index) SetClock(now func() time.Time) { x.now = now }

// Since returns the key set's entries in force at now that were revoked
// at or after since (or changed then: a subject's later cut-off), for a
// verifier that holds every entry revoked before it. ok is false when
// since is beyond the horizon: the caller sends the whole list instead.
// Its cost grows with the entries since, not with those in force.
func (x *Index) Since(keyset string, since, now time.Time) (tokens, subjects []Revocation, ok bool) {
	st := x.stats(x.id(keyset))
	st.mu.Lock()
	if since.Before(now.Add(-st.reach())) {
		st.mu.Unlock()
		return nil, nil, false
	}
	at := since.UnixNano()
	i, _ := slices.BinarySearchFunc(st.sorted(), at, func(e logged, t int64) int { return cmp.Compare(e.at, t) })
	recent := slices.Clone(st.recent[i:])
	st.mu.Unlock()
	seen := make(map[logged]bool, len(recent))
	for _, e := range recent {
		e.at = 0
		if seen[e] {
			continue
		}
		seen[e] = true
		r, found := x.lookup(keyset, e.k, e.subject)
		if !found || r.Expires.Before(now) {
			continue
		}
		if e.subject {
			subjects = append(subjects, r)
		} else {
			tokens = append(tokens, r)
		}
	}
	return tokens, subjects, true
}

// Has reports whether the index holds an entry for r's token or subject.
func (x *Index) Has(r Revocation) bool {
	_, ok := x.find(keyOf(x.id(r.KeySet), r), r.IsSubject())
	return ok
}

// find returns the entry at k among the subjects or the tokens.
func (x *Index) find(k key, subject bool) (entry, bool) {
	sh := x.shard(k)
	sh.mu.RLock()
	defer sh.mu.RUnlock()
	e, ok := sh.entries(subject)[k]
	return e, ok
}

// entries is the shard's map of subjects or of tokens. Callers hold mu.
func (sh *shard) entries(subject bool) map[key]entry {
	if subject {
		return sh.subs
	}
	return sh.jtis
}

// lookup returns the whole entry at k of the key set called keyset.
func (x *Index) lookup(keyset string, k key, subject bool) (Revocation, bool) {
	sh := x.shard(k)
	sh.mu.RLock()
	defer sh.mu.RUnlock()
	e, ok := sh.entries(subject)[k]
	if !ok {
		return Revocation{}, false
	}
	return sh.revocation(keyset, e, subject), true
}

// Len is the number of entries of the key set.
func (x *Index) Len(keyset string) int { return int(x.stats(x.id(keyset)).count.Load()) }

// Version changes whenever the key set's entries change.
func (x *Index) Version(keyset string) uint64 { return x.stats(x.id(keyset)).version.Load() }

// Prune drops the entries that expired before now, and the recent log's
// entries beyond the horizon, and returns how many entries it dropped.
func (x *Index) Prune(now time.Time) int {
	x.sets.Range(func(_, v any) bool {
		st := v.(*setStats)
		st.mu.Lock()
		cut := now.Add(-st.reach()).UnixNano()
		i, _ := slices.BinarySearchFunc(st.sorted(), cut, func(e logged, t int64) int { return cmp.Compare(e.at, t) })
		st.recent = slices.Delete(st.recent, 0, i)
		st.mu.Unlock()
		return true
	})
	n, t := 0, now.UnixNano()
	for i := range x.shards {
		sh := &x.shards[i]
		sh.mu.Lock()
		for _, m := range []map[key]entry{sh.jtis, sh.subs} {
			for k, e := range m {
				if e.expires < t {
					delete(m, k)
					sh.dead += int(e.vLen) + int(e.rLen)
					st := x.stats(k.set)
					st.count.Add(-1)
					st.version.Add(1)
					n++
				}
			}
		}
		sh.compact()
		sh.mu.Unlock()
	}
	return n
}

// Entries returns the key set's entries in force at now.
func (x *Index) Entries(keyset string, now time.Time) (tokens, subjects []Revocation) {
	id, t := x.id(keyset), now.UnixNano()
	for i := range x.shards {
		sh := &x.shards[i]
		sh.mu.RLock()
		for k, e := range sh.jtis {
			if k.set == id && e.expires >= t {
				tokens = append(tokens, sh.revocation(keyset, e, false))
			}
		}
		for k, e := range sh.subs {
			if k.set == id && e.expires >= t {
				subjects = append(subjects, sh.revocation(keyset, e, true))
			}
		}
		sh.mu.RUnlock()
	}
	return tokens, subjects
}

// Cutoff returns the cut-off of a subject revocation in force: every token
// (and login) of sub issued at or before it is revoked.
func (x *Index) Cutoff(keyset, sub string, now time.Time) (time.Time, bool) {
	e, ok := x.find(key{x.id(keyset), Digest(sub)}, true)
	if !ok || e.expires < now.UnixNano() {
		return time.Time{}, false
	}
	return timeOf(e.before), true
}

// Revoked reports whether the token whose claims (decoded with numbers as
// json.Number) are given is revoked: its jti is listed, or its subject
// with an iat at or before the cut-off (a token without iat cannot show it
// came later, so it is revoked too). It returns the subject cut-off when
// that is the reason. Entries not yet pruned count: an expired entry
// covers only tokens that have expired too.
func (x *Index) Revoked(keyset string, claims map[string]any) (revoked bool, cutoff time.Time) {
	id := x.id(keyset)
	if jti, ok := claims["jti"].(string); ok {
		if _, found := x.find(key{id, Digest(jti)}, false); found {
			return true, time.Time{}
		}
	}
	sub, ok := claims["sub"].(string)
	if !ok {
		return false, time.Time{}
	}
	e, found := x.find(key{id, Digest(sub)}, true)
	if !found {
		return false, time.Time{}
	}
	before := timeOf(e.before)
	n, isNum := claims["iat"].(json.Number)
	iat, err := n.Float64()
	if !isNum || err != nil || iat <= float64(before.Unix()) {
		return true, before
	}
	return false, time.Time{}
}
