package redis

import (
	"context"
	"sync"
	"time"

	goredis "github.com/redis/go-redis/v9"
)

// DefaultMaxInFlight is how many pipelines a Store keeps out to Redis at
// once before the next commands wait to leave together. On the 2-core
// machine (keyd-bench --only revocations, 16 callers, Redis beside keyd),
// token pair + refresh: one command per round trip 2,835 logins/s; 4 in
// flight 3,150; 2 in flight 3,361-3,455; 1 3,326-3,561.
const DefaultMaxInFlight = 2

// maxPipeline bounds the commands of one pipeline.
const maxPipeline = 128

// pipeliner sends the commands that concurrent callers give it together:
// a command leaves at once, alone, while fewer than maxInFlight pipelines
// are out; under more load the commands that arrive meanwhile wait for
// the next pipeline to free up and leave together in it (one write and
// one read for all of them, where each command alone costs go-redis a
// connection from its pool, a health check, a write and a read). A lone
// caller waits for nothing; under load, each revocation, login read and
// login write costs keyd and Redis a fraction of a round trip.
type pipeliner struct {
	c           goredis.UniversalClient
	maxInFlight int
	timeout     time.Duration // of one pipeline

	mu       sync.Mutex
	queue    []*queued
	inFlight int
}

type queued struct {
	add  func(p goredis.Pipeliner) goredis.Cmder // queues the command in p
	cmd  goredis.Cmder
	done chan struct{}
}

// do runs the command add queues, in a pipeline with whatever else is
// waiting, and returns it with its answer.
func (pl *pipeliner) do(add func(p goredis.Pipeliner) goredis.Cmder) goredis.Cmder {
	q := &queued{add: add, done: make(chan struct{})}
	pl.mu.Lock()
	pl.queue = append(pl.queue, q)
	if pl.inFlight < pl.maxInFlight {
		pl.inFlight++
		pl.mu.Unlock()
		pl.flush()
	} else {
		pl.mu.Unlock()
	}
	<-q.done
	return q.cmd
}

// flush holds one of the in-flight places: it sends what waits, and when
// more has arrived by the time the answers are in, hands its place to a
// goroutine that sends that, so its own caller is answered at once.
func (pl *pipeliner) flush() {
	pl.mu.Lock()
	n := min(len(pl.queue), maxPipeline)
	batch := make([]*queued, n)
	copy(batch, pl.queue)
	pl.queue = append(pl.queue[:0], pl.queue[n:]...)
	pl.mu.Unlock()

	ctx, cancel := context.WithTimeout(context.Background(), pl.timeout)
	p := pl.c.Pipeline()
	for _, q := range batch {
		q.cmd = q.add(p)
	}
	_, _ = p.Exec(ctx) // each command holds its own answer or error
	cancel()
	for _, q := range batch {
		close(q.done)
	}

	pl.mu.Lock()
	if len(pl.queue) > 0 {
		pl.mu.Unlock()
		go pl.flush()
		return
	}
	pl.inFlight--
	pl.mu.Unlock()
}
