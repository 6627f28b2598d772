//go:build !linux

package keygen

import "syscall"

// sysProcAttr: elsewhere than Linux there is no parent-death signal; the
// child is short-lived and ends with its key.
func sysProcAttr() *syscall.SysProcAttr { return nil }

// idle: SCHED_IDLE is Linux's; elsewhere the nice 19 the parent sets
// stays in force.
func idle() {}
