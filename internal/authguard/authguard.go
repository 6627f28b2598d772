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
//   - At most MaxSources sources are tracked; failures from further sources
//     share one entry ("other"), so memory is bounded too.
package authguard

import (
	"context"
	"fmt"
	"net"
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
	otherSource       = "other"
)

// Options configure a Guard; zero values take the defaults.
type Options struct {
	Now        func() time.Time
	Interval   time.Duration // aggregation interval of audit records
	Burst      int           // failures a source may make at once
	Rate       float64       // failures per second a source may make after the burst
	MaxSources int           // sources tracked at most
	// Record writes an aggregated record (nil: none are written).
	Record func(audit.Record)
}

// Guard counts and limits failed authentications.
type Guard struct {
	o Options

	mu      sync.Mutex
	sources map[string]*source
}

type source struct {
	limiter *rate.Limiter
	counts  map[countKey]*count // this interval's failures by reason and route
}

type countKey struct{ reason, route string }

type count struct {
	n     int // failures after the first, this interval
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
	if o.Record == nil {
		o.Record = func(audit.Record) {}
	}
	return &Guard{o: o, sources: map[string]*source{}}
}

// Source is the part of a request's remote address failures are counted
// by: the IP address without the port.
func Source(remoteAddr string) string {
	if host, _, err := net.SplitHostPort(remoteAddr); err == nil {
		return host
	}
	return remoteAddr
}

// Failed notes a failed authentication of remote (a request's RemoteAddr)
// for reason on route. It returns how long the source must wait and true
// when it is over its limit: answer 429 with that Retry-After.
func (g *Guard) Failed(remote, reason, route string) (time.Duration, bool) {
	now := g.o.Now()
	src := Source(remote)
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
	if seen {
		c.n++
		c.last = now
	} else {
		s.counts[k] = &count{first: now, last: now}
	}
	g.mu.Unlock()
	if !seen {
		g.o.Record(audit.Record{Time: now.UTC(), Event: audit.EventAuthFailed, Reason: reason, Route: route, Remote: src, Count: 1})
	}
	return wait, limited
}

// Flush writes one record per source, reason and route with the failures
// counted since the first one was recorded, and forgets the sources whose
// limiter is full again (they have been quiet long enough).
func (g *Guard) Flush() {
	now := g.o.Now()
	var out []audit.Record
	g.mu.Lock()
	for src, s := range g.sources {
		for k, c := range s.counts {
			if c.n > 0 {
				out = append(out, audit.Record{Time: now.UTC(), Event: audit.EventAuthFailed, Reason: k.reason, Route: k.route,
					Remote: src, Count: c.n, Detail: fmt.Sprintf("%d more failures between %s and %s", c.n,
						c.first.UTC().Format(time.RFC3339), c.last.UTC().Format(time.RFC3339))})
			}
		}
		clear(s.counts)
		if s.limiter.TokensAt(now) >= float64(g.o.Burst) {
			delete(g.sources, src)
		}
	}
	g.mu.Unlock()
	for _, r := range out {
		g.o.Record(r)
	}
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
