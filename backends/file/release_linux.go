package file

import "golang.org/x/sys/unix"

// dontNeed tells the kernel the process no longer needs the pages of the
// mapping [addr, addr+size): they leave its RSS (a file's pages stay in
// the page cache) and are read again when touched.
func dontNeed(addr uintptr, size int) error {
	if _, _, errno := unix.Syscall(unix.SYS_MADVISE, addr, uintptr(size), unix.MADV_DONTNEED); errno != 0 {
		return errno
	}
	return nil
}
