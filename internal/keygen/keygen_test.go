package keygen_test

import (
	"bytes"
	"crypto/rsa"
	"crypto/x509"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/keyd-dev/keyd/internal/keygen"
	"github.com/keyd-dev/keyd/keystore"
)

// TestMain lets the test binary play the child process.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == "keygen-child" {
		if err := keygen.Serve(os.Args[2:], os.Stdout); err != nil {
			os.Stderr.WriteString(err.Error())
			os.Exit(1)
		}
		os.Exit(0)
	}
	if len(os.Args) > 1 && os.Args[1] == "keygen-policy" {
		// Serve, then report the scheduling policy of every thread.
		if err := keygen.Serve([]string{"RS256", "2048"}, io.Discard); err != nil {
			os.Stderr.WriteString(err.Error())
			os.Exit(1)
		}
		tasks, _ := os.ReadDir("/proc/self/task")
		for _, task := range tasks {
			stat, err := os.ReadFile("/proc/self/task/" + task.Name() + "/stat")
			if err != nil {
				continue // the thread ended
			}
			fields := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+2:]))
			fmt.Println(fields[38]) // policy: the 41st field of stat
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestChildRunsAtIdlePriority runs Serve as the child does and reads the
// scheduling policy of each of its threads afterwards: SCHED_IDLE, the
// threads the runtime started meanwhile included.
func TestChildRunsAtIdlePriority(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(self, "keygen-policy").Output()
	if err != nil {
		t.Fatal(err)
	}
	policies := strings.Fields(string(out))
	if len(policies) == 0 {
		t.Fatal("the child reported no threads")
	}
	for _, p := range policies {
		if p != "5" { // SCHED_IDLE
			t.Fatalf("child thread policies %v, want all 5 (SCHED_IDLE)", policies)
		}
	}
}

func TestSubprocessMakesRSAKeys(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	gen := keygen.Subprocess(self, "keygen-child")
	m, err := gen(keystore.RS256, 2048)
	if err != nil {
		t.Fatal(err)
	}
	priv, err := x509.ParsePKCS8PrivateKey(m)
	if err != nil {
		t.Fatal(err)
	}
	if k, ok := priv.(*rsa.PrivateKey); !ok || k.N.BitLen() != 2048 || k.Validate() != nil {
		t.Fatalf("child made %T", priv)
	}
	// Other algorithms are made in process (the child would refuse no
	// argument, but is not asked).
	if m, err := gen(keystore.ES256, 0); err != nil || len(m) == 0 {
		t.Fatalf("ES256: %v", err)
	}
	if _, err := gen(keystore.RS256, 1000); err == nil {
		t.Fatal("the child's refusal of 1000 bits was not reported")
	}
}

func TestServeRefusesBadArguments(t *testing.T) {
	var out bytes.Buffer
	for _, args := range [][]string{{}, {"none", "2048"}, {"RS256", "x"}} {
		if err := keygen.Serve(args, &out); err == nil {
			t.Errorf("Serve(%q) accepted", args)
		}
	}
	if out.Len() != 0 {
		t.Fatalf("a refused request wrote %q", out.String())
	}
	// Serve's success is the child's (TestSubprocessMakesRSAKeys): run here,
	// it would put this test process at idle priority.
}

// TestThrottlePausesWhileBusy drives Throttle with its own ticks and CPU
// readings against a real process, and reads the process's state from
// /proc: paused after a busy tick, resumed at the next, left running after
// a quiet one and when generation ends.
func TestThrottlePausesWhileBusy(t *testing.T) {
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })

	// Throttle reads "keyd"'s CPU time once at its start and once per
	// tick; the test hands it each reading.
	readings := make(chan time.Duration)
	ticks := make(chan time.Time)
	done := make(chan struct{})
	returned := make(chan struct{})
	go func() {
		defer close(returned)
		keygen.Throttle(cmd.Process, func() time.Duration { return <-readings }, ticks, done)
	}()
	var cpu time.Duration
	readings <- cpu
	tick := func(used time.Duration) {
		cpu += used
		ticks <- time.Time{}
		readings <- cpu
	}
	state := func() byte {
		raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", cmd.Process.Pid))
		if err != nil {
			t.Fatal(err)
		}
		return raw[bytes.LastIndexByte(raw, ')')+2]
	}
	// Signals arrive asynchronously; wait for the state they cause.
	waitState := func(want byte, why string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for state() != want {
			if time.Now().After(deadline) {
				t.Fatalf("%s: process state %c, want %c", why, state(), want)
			}
			runtime.Gosched()
		}
	}

	tick(keygen.Tick / 10) // quiet: keyd used a tenth of a CPU
	tick(keygen.Tick / 10)
	if s := state(); s == 'T' {
		t.Fatal("paused although keyd was quiet")
	}
	tick(keygen.Tick) // busy: a whole CPU
	waitState('T', "after a busy tick")
	tick(keygen.Tick) // the pause lasts one tick, busy or not
	waitState('S', "one tick after pausing")
	tick(keygen.Tick)
	waitState('T', "after another busy tick")
	close(done) // generation ended while paused
	<-returned
	waitState('S', "after Throttle returned")
}
