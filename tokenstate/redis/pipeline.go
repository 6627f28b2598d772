package redis

import (
	"context"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/keyd-dev/keyd/internal/gather"
)

// DefaultMaxInFlight is how many pipelines a Store keeps out to Redis at
// once before the next commands wait to leave together. On the 2-core
// machine (keyd-bench --only revocations, 16 callers, Redis beside keyd),
// token pair + refresh: one command per round trip 2,835 logins/s; 4 in
// flight 3,150; 2 in flight 3,361-3,455; 1 3,326-3,561.
const DefaultMaxInFlight = 2

// maxPipeline bounds the commands of one pipeline.
const maxPipeline = 128

// pipeliner sends the commands that concurrent callers give it together
// (gather.Batcher): a command leaves at once, alone, while fewer than
// maxInFlight pipelines are out; under more load the commands that arrive
// meanwhile leave together in the next pipeline (one write and one read
// for all of them, where each command alone costs go-redis a connection
// from its pool, a health check, a write and a read). Under load, each
// revocation, login read and login write costs keyd and Redis a fraction
// of a round trip.
type pipeliner struct {
	c       goredis.UniversalClient
	timeout time.Duration // of one pipeline
	g       gather.Batcher[func(p goredis.Pipeliner) goredis.Cmder, goredis.Cmder]
}

func newPipeliner(c goredis.UniversalClient, maxInFlight int, timeout time.Duration) *pipeliner {
	pl := &pipeliner{c: c, timeout: timeout}
	pl.g = gather.Batcher[func(p goredis.Pipeliner) goredis.Cmder, goredis.Cmder]{MaxInFlight: maxInFlight, MaxBatch: maxPipeline, Send: pl.send}
	return pl
}

// do runs the command add queues in a pipeline, with whatever else is
// waiting, and returns it with its answer.
func (pl *pipeliner) do(add func(p goredis.Pipeliner) goredis.Cmder) goredis.Cmder {
	cmd, _ := pl.g.Do(add)
	return cmd
}

// send runs one pipeline of the commands adds queue; each command holds
// its own answer or error.
func (pl *pipeliner) send(adds []func(p goredis.Pipeliner) goredis.Cmder) ([]goredis.Cmder, []error) {
	ctx, cancel := context.WithTimeout(context.Background(), pl.timeout)
	defer cancel()
	p := pl.c.Pipeline()
	cmds := make([]goredis.Cmder, len(adds))
	for i, add := range adds {
		cmds[i] = add(p)
	}
	_, _ = p.Exec(ctx)
	return cmds, make([]error, len(adds))
}
