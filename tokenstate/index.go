package tokenstate

import (
	"cmp"
	"encoding/json"
	"hash/maphash"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Index is the revocations in force, in memory, for the checks of every
// verification: sharded maps under read locks, so that checks run in
// parallel and an addition locks one shard only. Safe for concurrent use.
type Index struct {
	seed   maphash.Seed
	shards [64]shard

	mu   sync.Mutex // guards sets' creation
	sets sync.Map   // key set name -> *setStats
	now  func() time.Time
}

type shard struct {
	mu   sync.RWMutex
	jtis map[key]Revocation
	subs map[key]Revocation
}

type key struct{ keyset, v string }

// setStats are one key set's count, version and recent entries.
type setStats struct {
	count   atomic.Int64
	version atomic.Uint64 // bumped on every change: the revocation list is re-signed

	mu      sync.Mutex
	horizon time.Duration // how far back recent reaches; 0: DefaultHorizon
	recent  []logged      // entries revoked within the horizon, by RevokedAt
}

// logged is an entry of a key set's recent log: enough to find it again.
type logged struct {
	at      int64 // RevokedAt, Unix nanoseconds
	v       string
	subject bool
}

// DefaultHorizon is how far back Since reaches unless SetHorizon says
// otherwise: a verifier whose copy is older gets the whole list.
const DefaultHorizon = time.Hour

// NewIndex returns an empty index.
func NewIndex() *Index {
	x := &Index{seed: maphash.MakeSeed(), now: time.Now}
	for i := range x.shards {
		x.shards[i].jtis = map[key]Revocation{}
		x.shards[i].subs = map[key]Revocation{}
	}
	return x
}

func (x *Index) shard(k key) *shard {
	var h maphash.Hash
	h.SetSeed(x.seed)
	h.WriteString(k.keyset)
	h.WriteString(k.v)
	return &x.shards[h.Sum64()%uint64(len(x.shards))]
}

func (x *Index) stats(keyset string) *setStats {
	if s, ok := x.sets.Load(keyset); ok {
		return s.(*setStats)
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	s, _ := x.sets.LoadOrStore(keyset, new(setStats))
	return s.(*setStats)
}

// Add puts r in the index (merged with an entry for the same token or
// subject). When the key set has max entries already and r is new, it
// refuses with ErrLimit; max <= 0 is no limit.
func (x *Index) Add(r Revocation, max int) error {
	k := keyOf(r)
	st := x.stats(r.KeySet)
	sh := x.shard(k)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	m := sh.jtis
	if r.IsSubject() {
		m = sh.subs
	}
	if cur, ok := m[k]; ok {
		m[k] = cur.Merge(r)
	} else {
		if max > 0 && st.count.Load() >= int64(max) {
			return ErrLimit
		}
		m[k] = r
		st.count.Add(1)
	}
	st.version.Add(1)
	st.log(r, x.now())
	return nil
}

// log records r in the key set's recent entries if it was revoked within
// the horizon: in RevokedAt order, which is nearly the order of arrival
// (a replica's may come a little late), so the insertion is at or near
// the end.
func (st *setStats) log(r Revocation, now time.Time) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if r.RevokedAt.Before(now.Add(-st.reach())) {
		return
	}
	at := r.RevokedAt.UnixNano()
	i := len(st.recent)
	for i > 0 && st.recent[i-1].at > at {
		i--
	}
	st.recent = slices.Insert(st.recent, i, logged{at: at, v: keyOf(r).v, subject: r.IsSubject()})
}

func (st *setStats) reach() time.Duration { return cmp.Or(st.horizon, DefaultHorizon) }

// SetHorizon sets how far back Since reaches for the key set (a verifier
// polling every jwks_max_age should stay well within it).
func (x *Index) SetHorizon(keyset string, d time.Duration) {
	st := x.stats(keyset)
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
	st := x.stats(keyset)
	st.mu.Lock()
	if since.Before(now.Add(-st.reach())) {
		st.mu.Unlock()
		return nil, nil, false
	}
	at := since.UnixNano()
	i, _ := slices.BinarySearchFunc(st.recent, at, func(e logged, t int64) int { return cmp.Compare(e.at, t) })
	recent := slices.Clone(st.recent[i:])
	st.mu.Unlock()
	seen := make(map[logged]bool, len(recent))
	for _, e := range recent {
		e.at = 0
		if seen[e] {
			continue
		}
		seen[e] = true
		r, found := x.lookup(key{keyset, e.v}, e.subject)
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
	_, ok := x.lookup(keyOf(r), r.IsSubject())
	return ok
}

func keyOf(r Revocation) key {
	if r.IsSubject() {
		return key{r.KeySet, r.Subject}
	}
	return key{r.KeySet, r.JTI}
}

// lookup returns the entry for k among the subjects or the tokens.
func (x *Index) lookup(k key, subject bool) (Revocation, bool) {
	sh := x.shard(k)
	sh.mu.RLock()
	defer sh.mu.RUnlock()
	m := sh.jtis
	if subject {
		m = sh.subs
	}
	r, ok := m[k]
	return r, ok
}

// Len is the number of entries of the key set.
func (x *Index) Len(keyset string) int { return int(x.stats(keyset).count.Load()) }

// Version changes whenever the key set's entries change.
func (x *Index) Version(keyset string) uint64 { return x.stats(keyset).version.Load() }

// Prune drops the entries that expired before now, and the recent log's
// entries beyond the horizon, and returns how many entries it dropped.
func (x *Index) Prune(now time.Time) int {
	x.sets.Range(func(_, v any) bool {
		st := v.(*setStats)
		st.mu.Lock()
		cut := now.Add(-st.reach()).UnixNano()
		i, _ := slices.BinarySearchFunc(st.recent, cut, func(e logged, t int64) int { return cmp.Compare(e.at, t) })
		st.recent = slices.Delete(st.recent, 0, i)
		st.mu.Unlock()
		return true
	})
	n := 0
	for i := range x.shards {
		sh := &x.shards[i]
		sh.mu.Lock()
		for _, m := range []map[key]Revocation{sh.jtis, sh.subs} {
			for k, r := range m {
				if r.Expires.Before(now) {
					delete(m, k)
					st := x.stats(k.keyset)
					st.count.Add(-1)
					st.version.Add(1)
					n++
				}
			}
		}
		sh.mu.Unlock()
	}
	return n
}

// Entries returns the key set's entries in force at now.
func (x *Index) Entries(keyset string, now time.Time) (tokens, subjects []Revocation) {
	for i := range x.shards {
		sh := &x.shards[i]
		sh.mu.RLock()
		for k, r := range sh.jtis {
			if k.keyset == keyset && !r.Expires.Before(now) {
				tokens = append(tokens, r)
			}
		}
		for k, r := range sh.subs {
			if k.keyset == keyset && !r.Expires.Before(now) {
				subjects = append(subjects, r)
			}
		}
		sh.mu.RUnlock()
	}
	return tokens, subjects
}

// Cutoff returns the cut-off of a subject revocation in force: every token
// (and login) of sub issued at or before it is revoked.
func (x *Index) Cutoff(keyset, sub string, now time.Time) (time.Time, bool) {
	r, ok := x.lookup(key{keyset, sub}, true)
	if !ok || r.Expires.Before(now) {
		return time.Time{}, false
	}
	return r.Before, true
}

// Revoked reports whether the token whose claims (decoded with numbers as
// json.Number) are given is revoked: its jti is listed, or its subject
// with an iat at or before the cut-off (a token without iat cannot show it
// came later, so it is revoked too). It returns the subject cut-off when
// that is the reason. Entries not yet pruned count: an expired entry
// covers only tokens that have expired too.
func (x *Index) Revoked(keyset string, claims map[string]any) (revoked bool, cutoff time.Time) {
	if jti, ok := claims["jti"].(string); ok {
		if _, found := x.lookup(key{keyset, jti}, false); found {
			return true, time.Time{}
		}
	}
	sub, ok := claims["sub"].(string)
	if !ok {
		return false, time.Time{}
	}
	r, found := x.lookup(key{keyset, sub}, true)
	if !found {
		return false, time.Time{}
	}
	before := r.Before
	n, isNum := claims["iat"].(json.Number)
	iat, err := n.Float64()
	if !isNum || err != nil || iat <= float64(before.Unix()) {
		return true, before
	}
	return false, time.Time{}
}
