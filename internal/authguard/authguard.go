// Package authguard bounds what failed authentications cost keyd: it
// rate-limits them per source (the caller's IP address) and aggregates
// their audit records, so that nobody can grow the audit trail, or fill a
// required audit disk, by sending requests without a valid token.
//
// It is its own package because it is state of its own (a limiter and a
// counter per source, swept on a clock) that the API only calls: the
// handler asks Failed on every refused request and answers 429 when told.
//
// Rules:
//   - A caller with valid credentials is never limited: failures from a
//     source (a NAT or proxy shared with a misconfigured service) never lock
//     its valid callers out. Tokens are 256 random bits: the limit exists to
//     bound work and audit volume, and to tell a broken client to back off.
//   - Each source may fail Burst times at once, then Rate per second; past
//     that its failures are answered 429 with the wait in Retry-After.
//   - The first failure of a source and reason in an interval is recorded at
//     once (an alert sees it); the rest of the interval's are one record with
//     their count, written when the interval ends. Records per source are
//     thus at most two per reason per interval, however many requests.
//   - A source is an address's network: IPv4 /32 and IPv6 /64 by default
//     (one host owns a /64, and 2^64 addresses would otherwise be as many
//     sources); both prefix lengths are settings.
//   - Behind a load balancer every caller shares its address: a peer in
//     TrustedProxies is looked through, to the rightmost address of
//     X-Forwarded-For that is not a trusted proxy. X-Forwarded-For from
//     anyone else is ignored (anyone can write it).
//   - The failure records of an interval are at most MaxRecords at once
//     and MaxRecords at its end, however many sources fail: past that, one
//     record counts the rest and how many sources they came from.
//   - At most MaxSources sources are tracked; failures from further sources
//     share one entry ("other"), so memory is bounded too.
package authguard

import (
	"cmp"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/keyd-dev/keyd/audit"
)

// Defaults of Options.
const (
	DefaultInterval   = time.Minute
	DefaultBurst      = 20
	DefaultRate       = 1.0 // failures per second, after the burst
	DefaultMaxSources = 10000
	DefaultMaxRecords = 20 // at once, and again at the interval's end
	DefaultIPv4Prefix = 32
	DefaultIPv6Prefix = 64
	otherSource       = "other"
	manySources       = "many"
)

// Options configure a Guard; zero values take the defaults.
type Options struct {
	Now        func() time.Time
	Interval   time.Duration // aggregation interval of audit records
	Burst      int           // failures a source may make at once
	Rate       float64       // failures per second a source may make after the burst
	MaxSources int           // sources tracked at most
	MaxRecords int           // failure records written at once per interval, and at its end
	IPv4Prefix int           // bits of an IPv4 address that make a source (default 32)
	IPv6Prefix int           // bits of an IPv6 address that make a source (default 64)
	// TrustedProxies are the load balancers whose X-Forwarded-For names
	// the caller.
	TrustedProxies []netip.Prefix
	// Record writes an aggregated record (nil: none are written).
	Record func(audit.Record)
}

// Guard counts and limits failed authentications.
type Guard struct {
	o Options

	mu       sync.Mutex
	sources  map[string]*source
	recorded int // records written at once this interval
}

type source struct {
	limiter *rate.Limiter
	counts  map[countKey]*count // this interval's failures by reason and route
}

type countKey struct{ reason, route string }

type count struct {
	n     int // failures not in a record yet, this interval
	first time.Time
	last  time.Time
}

// New returns a Guard.
func New(o Options) *Guard {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Interval <= 0 {
		o.Interval = DefaultInterval
	}
	if o.Burst <= 0 {
		o.Burst = DefaultBurst
	}
	if o.Rate <= 0 {
		o.Rate = DefaultRate
	}
	if o.MaxSources <= 0 {
		o.MaxSources = DefaultMaxSources
	}
	o.MaxRecords = cmp.Or(max(o.MaxRecords, 0), DefaultMaxRecords)
	o.IPv4Prefix = cmp.Or(o.IPv4Prefix, DefaultIPv4Prefix)
	o.IPv6Prefix = cmp.Or(o.IPv6Prefix, DefaultIPv6Prefix)
	if o.Record == nil {
		o.Record = func(audit.Record) {}
	}
	return &Guard{o: o, sources: map[string]*source{}}
}

// Source is what the failures of request r are counted by: its caller's
// address (see ClientAddr) cut to the source prefix of its family.
func (g *Guard) Source(r *http.Request) string {
	addr, ok := g.ClientAddr(r)
	if !ok {
		return hostOf(r.RemoteAddr)
	}
	return g.sourceOf(addr)
}

// ClientAddr is the address of r's caller: the peer's, or, when the peer
// is a trusted proxy, the rightmost address of X-Forwarded-For that is not
// one (an address a client put there itself is never read past it).
func (g *Guard) ClientAddr(r *http.Request) (netip.Addr, bool) {
	peer, err := netip.ParseAddr(hostOf(r.RemoteAddr))
	if err != nil {
		return netip.Addr{}, false
	}
	peer = peer.Unmap()
	if !g.trusted(peer) {
		return peer, true
	}
	hops := strings.Split(strings.Join(r.Header.Values("X-Forwarded-For"), ","), ",")
	for _, h := range slices.Backward(hops) {
		a, err := netip.ParseAddr(strings.TrimSpace(h))
		if err != nil {
			return peer, true // a hop that does not parse: nothing left of it is to be believed
		}
		if a = a.Unmap(); !g.trusted(a) {
			return a, true
		}
		peer = a
	}
	return peer, true
}

func (g *Guard) trusted(a netip.Addr) bool {
	for _, p := range g.o.TrustedProxies {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// sourceOf cuts a to its family's source prefix: the address itself for a
// whole-address prefix, else the network (2001:db8:1:2::/64).
func (g *Guard) sourceOf(a netip.Addr) string {
	bits := g.o.IPv6Prefix
	if a.Is4() {
		bits = g.o.IPv4Prefix
	}
	if bits >= a.BitLen() {
		return a.String()
	}
	p, err := a.Prefix(bits)
	if err != nil {
		return a.String()
	}
	return p.String()
}

func hostOf(remoteAddr string) string {
	if host, _, err := net.SplitHostPort(remoteAddr); err == nil {
		return host
	}
	return remoteAddr
}

// Failed notes a failed authentication from src (Source of the request)
// for reason on route. It returns how long the source must wait and true
// when it is over its limit: answer 429 with that Retry-After.
func (g *Guard) Failed(src, reason, route string) (time.Duration, bool) {
	now := g.o.Now()
	g.mu.Lock()
	s, ok := g.sources[src]
	if !ok {
		if len(g.sources) >= g.o.MaxSources {
			src = otherSource
			s = g.sources[src]
		}
		if s == nil {
			s = &source{limiter: rate.NewLimiter(rate.Limit(g.o.Rate), g.o.Burst), counts: map[countKey]*count{}}
			g.sources[src] = s
		}
	}
	// One reservation: taken when allowed, handed back (and its wait told)
	// when the source is over its limit.
	r := s.limiter.ReserveN(now, 1)
	wait := r.DelayFrom(now)
	limited := wait > 0
	if limited {
		r.CancelAt(now)
	}
	k := countKey{reason, route}
	c, seen := s.counts[k]
	if !seen {
		c = &count{first: now}
		s.counts[k] = c
	}
	c.last = now
	// The first failure of a source, reason and route is recorded at once
	// while the interval's budget lasts; the others are counted.
	record := !seen && g.recorded < g.o.MaxRecords
	if record {
		g.recorded++
	} else {
		c.n++
	}
	g.mu.Unlock()
	if record {
		g.o.Record(audit.Record{Time: now.UTC(), Event: audit.EventAuthFailed, Reason: reason, Route: route, Remote: src, Count: 1})
	}
	return wait, limited
}

// Flush writes one record per source, reason and route with the failures
// counted since the last record, the busiest first, at most MaxRecords:
// the rest are one record with their count and how many sources they came
// from. It forgets the sources whose limiter is full again (they have
// been quiet long enough).
func (g *Guard) Flush() {
	now := g.o.Now()
	type pending struct {
		src string
		k   countKey
		c   count
	}
	var all []pending
	g.mu.Lock()
	for src, s := range g.sources {
		for k, c := range s.counts {
			if c.n > 0 {
				all = append(all, pending{src, k, *c})
			}
		}
		clear(s.counts)
		if s.limiter.TokensAt(now) >= float64(g.o.Burst) {
			delete(g.sources, src)
		}
	}
	g.recorded = 0
	g.mu.Unlock()
	slices.SortFunc(all, func(a, b pending) int { return b.c.n - a.c.n })
	between := func(first, last time.Time) string {
		return fmt.Sprintf("between %s and %s", first.UTC().Format(time.RFC3339), last.UTC().Format(time.RFC3339))
	}
	named := all
	if len(all) > g.o.MaxRecords {
		named = all[:g.o.MaxRecords-1]
	}
	for _, p := range named {
		g.o.Record(audit.Record{Time: now.UTC(), Event: audit.EventAuthFailed, Reason: p.k.reason, Route: p.k.route,
			Remote: p.src, Count: p.c.n, Detail: fmt.Sprintf("%d more failures %s", p.c.n, between(p.c.first, p.c.last))})
	}
	if rest := all[len(named):]; len(rest) > 0 {
		n, first, last, srcs := 0, rest[0].c.first, rest[0].c.last, map[string]bool{}
		for _, p := range rest {
			n, first, last, srcs[p.src] = n+p.c.n, minTime(first, p.c.first), maxTime(last, p.c.last), true
		}
		g.o.Record(audit.Record{Time: now.UTC(), Event: audit.EventAuthFailed, Remote: manySources, Count: n,
			Detail: fmt.Sprintf("%d more failures from %d sources %s (past the %d records an interval names)", n, len(srcs), between(first, last), g.o.MaxRecords)})
	}
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// Run flushes every interval until ctx is done, then once more.
func (g *Guard) Run(ctx context.Context) {
	t := time.NewTicker(g.o.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			g.Flush()
			return
		case <-t.C:
			g.Flush()
		}
	}
}

// Sources is how many sources are tracked now (metrics, tests).
func (g *Guard) Sources() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.sources)
}
