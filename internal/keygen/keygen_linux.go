package keygen

import (
	"os"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

// sysProcAttr: a child paused by the throttle must not outlive a keyd
// killed meanwhile.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}

// idle puts every thread of this process under SCHED_IDLE. Threads the Go
// runtime starts later are cloned from these and inherit it; the second
// pass catches a thread started during the first. Where the policy is
// refused (a seccomp filter, an old kernel), nice 19 set by the parent
// stays in force.
func idle() {
	for range 2 {
		tasks, err := os.ReadDir("/proc/self/task")
		if err != nil {
			return
		}
		for _, t := range tasks {
			if tid, err := strconv.Atoi(t.Name()); err == nil {
				_ = unix.SchedSetAttr(tid, &unix.SchedAttr{Size: unix.SizeofSchedAttr, Policy: unix.SCHED_IDLE}, 0)
			}
		}
	}
}
