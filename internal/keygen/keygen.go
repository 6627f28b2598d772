// Package keygen makes RSA keys in a child process at the lowest CPU
// priority, so that a rotation (seconds of CPU for RSA-4096) does not stall
// signing: the child has its own heap and garbage collector, and the
// kernel gives it only the time requests leave over (SCHED_IDLE, which
// any runnable thread of keyd preempts, and nice 19 where SCHED_IDLE is
// refused); on an idle machine it runs at full speed.
//
// A lower priority is not enough on a loaded machine: the child still runs
// in every gap the request threads leave, and on virtual CPUs that costs
// them (measured: sign p99 +20-38% while RSA-4096 keys are generated back
// to back, as much as any idle-priority busy loop costs). So while keyd
// itself is busy, the child is also paused every other tick (Throttle):
// generation takes up to twice as long under load, and runs unhindered
// when keyd is quiet. The child is the keyd binary itself,
// started with a hidden command that runs Serve. Other algorithms take
// microseconds and are made in process.
package keygen

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"time"

	"github.com/keyd-dev/keyd/keystore"
)

// Subprocess returns a Generator that makes RSA keys by running binary
// with args, then the algorithm and the bits, at idle priority, throttled
// while keyd is busy.
func Subprocess(binary string, args ...string) keystore.Generator {
	return func(alg keystore.Algorithm, bits int) (keystore.Material, error) {
		if alg.Family() != keystore.FamilyRSA {
			return keystore.GenerateMaterial(alg, bits)
		}
		cmd := exec.Command(binary, append(args, string(alg), strconv.Itoa(bits))...)
		// One P: the child has one goroutine of work, and its garbage
		// collector should not start a worker per core.
		cmd.Env = append(os.Environ(), "GOMAXPROCS=1")
		// A child paused by the throttle must not outlive a keyd killed
		// meanwhile.
		cmd.SysProcAttr = sysProcAttr()
		var out, errOut bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errOut
		if err := cmd.Start(); err != nil {
			return nil, fmt.Errorf("key generation process: %w", err)
		}
		// The child starts at the parent's priority for the moment this
		// takes; key generation has not begun by then.
		_ = syscall.Setpriority(syscall.PRIO_PROCESS, cmd.Process.Pid, 19)
		done := make(chan struct{})
		throttled := make(chan struct{})
		go func() {
			defer close(throttled)
			ticker := time.NewTicker(Tick)
			defer ticker.Stop()
			Throttle(cmd.Process, selfCPU, ticker.C, done)
		}()
		err := cmd.Wait()
		close(done)
		<-throttled
		if err != nil {
			return nil, fmt.Errorf("key generation process: %w: %s", err, bytes.TrimSpace(errOut.Bytes()))
		}
		m, err := base64.StdEncoding.DecodeString(string(bytes.TrimSpace(out.Bytes())))
		if err != nil || len(m) == 0 {
			return nil, errors.New("key generation process: no key material in its output")
		}
		return keystore.Material(m), nil
	}
}

// Tick is the throttle's period: the child runs at least one tick, then
// is paused for one whenever keyd used more than half a CPU in the tick it
// ran.
const Tick = 10 * time.Millisecond

// Throttle pauses p (SIGSTOP) for one tick after each tick in which cpu,
// this process's CPU time, grew by more than half a tick, and resumes it
// (SIGCONT) at the next; it returns, p resumed, when done is closed.
func Throttle(p *os.Process, cpu func() time.Duration, ticks <-chan time.Time, done <-chan struct{}) {
	paused := false
	last := cpu()
	for {
		select {
		case <-done:
			if paused {
				_ = p.Signal(syscall.SIGCONT)
			}
			return
		case <-ticks:
		}
		now := cpu()
		switch {
		case paused:
			paused = p.Signal(syscall.SIGCONT) != nil
		case now-last > Tick/2:
			paused = p.Signal(syscall.SIGSTOP) == nil
		}
		last = now
	}
}

// selfCPU is this process's user and system CPU time so far.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// Serve is the child's side: args are the algorithm and the RSA bits; it
// puts its own process at idle priority, then writes the material, base64,
// to stdout (a pipe to the parent only).
func Serve(args []string, stdout io.Writer) error {
	if len(args) != 2 {
		return errors.New("usage: ALGORITHM BITS")
	}
	alg, err := keystore.ParseAlgorithm(args[0])
	if err != nil {
		return err
	}
	bits, err := strconv.Atoi(args[1])
	if err != nil {
		return fmt.Errorf("bits: %w", err)
	}
	idle()
	m, err := keystore.GenerateMaterial(alg, bits)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(stdout, base64.StdEncoding.EncodeToString(m))
	return err
}
