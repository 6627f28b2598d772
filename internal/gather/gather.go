// Package gather sends together what concurrent callers ask of a remote
// service one at a time: a caller's request leaves at once, alone, while
// fewer than MaxInFlight round trips are out; under more load the
// requests that arrive meanwhile wait for the next round trip to free up
// and leave together in it. A lone caller waits for nothing; under load a
// request costs a fraction of a round trip. Vault Transit custody
// (batch_input) and the Redis token state (pipelines) use it; it is a
// package of its own because both need the same hand-off, and getting it
// subtly wrong loses a caller's answer.
package gather

import (
	"errors"
	"fmt"
	"sync"
)

// Batcher gathers requests of type In into calls of Send.
type Batcher[In, Out any] struct {
	// MaxInFlight bounds the calls of Send at once (at least 1).
	MaxInFlight int
	// MaxBatch bounds the requests of one call of Send (at least 1).
	MaxBatch int
	// Send makes one round trip for ins and returns each one's answer or
	// error, in their order (len(ins) of each).
	Send func(ins []In) ([]Out, []error)

	mu       sync.Mutex
	queue    []*call[In, Out]
	inFlight int
}

type call[In, Out any] struct {
	in   In
	out  Out
	err  error
	done chan struct{}
}

// Do sends in, with whatever else waits, and returns its answer.
func (b *Batcher[In, Out]) Do(in In) (Out, error) {
	c := &call[In, Out]{in: in, done: make(chan struct{})}
	b.mu.Lock()
	b.queue = append(b.queue, c)
	if b.inFlight < max(b.MaxInFlight, 1) {
		b.inFlight++
		b.mu.Unlock()
		b.flush()
	} else {
		b.mu.Unlock()
	}
	<-c.done
	return c.out, c.err
}

// flush holds one of the in-flight places: it sends what waits, and when
// more has arrived by the time the answers are in, hands its place to a
// goroutine that sends that, so that its own caller is answered at once.
func (b *Batcher[In, Out]) flush() {
	b.mu.Lock()
	n := min(len(b.queue), max(b.MaxBatch, 1))
	batch := make([]*call[In, Out], n)
	copy(batch, b.queue)
	b.queue = append(b.queue[:0], b.queue[n:]...)
	b.mu.Unlock()

	ins := make([]In, n)
	for i, c := range batch {
		ins[i] = c.in
	}
	outs, errs := b.send(ins)
	for i, c := range batch {
		c.out, c.err = outs[i], errs[i]
		close(c.done)
	}

	b.mu.Lock()
	if len(b.queue) > 0 {
		b.mu.Unlock()
		go b.flush()
		return
	}
	b.inFlight--
	b.mu.Unlock()
}

// send calls Send; a panic in it (a bug) becomes every request's error
// (its value is not told: it could hold anything),
// so that no caller waits forever and the in-flight place is given back.
func (b *Batcher[In, Out]) send(ins []In) (outs []Out, errs []error) {
	defer func() {
		v := recover()
		if v == nil && len(outs) == len(ins) && len(errs) == len(ins) {
			return
		}
		err := errors.New("gather: the round trip panicked") // not its value: it could hold anything
		if v == nil {
			err = fmt.Errorf("gather: %d answers and %d errors for %d requests", len(outs), len(errs), len(ins))
		}
		outs, errs = make([]Out, len(ins)), make([]error, len(ins))
		for i := range errs {
			errs[i] = err
		}
	}()
	return b.Send(ins)
}
