// Package secretfile reads the files that hold secrets keyd is given (an
// audit key, a CA's private key, an HSM PIN, the master key, the TLS key,
// the Redis password, the Vault AppRole secret-id): each must be readable
// by its owner alone, and no error ever shows its content. It is a package
// of its own so that every such file gets the same rule and the same words.
//
// The rule, as PostgreSQL's for its key files: no access for others, and
// none for the group, except read when the file belongs to root and to a
// group keyd's process is in. That is how Kubernetes mounts a Secret in a
// pod with an fsGroup (root:fsGroup, mode 0440), which only the pod's
// processes share.
package secretfile

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"syscall"
)

// Check fails when path cannot be read, or is readable by others, or by
// a group outside the rule above, saying how to fix it.
func Check(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	perm := fi.Mode().Perm()
	if perm&0o077 == 0 || (perm&0o037 == 0 && rootOwnedOurGroup(fi)) {
		return nil
	}
	return fmt.Errorf("%s has mode %04o, readable by others; run chmod 600 %s", path, perm, path)
}

// rootOwnedOurGroup reports whether fi belongs to root and to one of this
// process's groups.
func rootOwnedOurGroup(fi os.FileInfo) bool {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok || st.Uid != 0 {
		return false
	}
	if int(st.Gid) == os.Getgid() {
		return true
	}
	groups, err := os.Getgroups()
	return err == nil && slices.Contains(groups, int(st.Gid))
}

// Read is Check, then the file's content.
func Read(path string) ([]byte, error) {
	if err := Check(path); err != nil {
		return nil, err
	}
	return os.ReadFile(path)
}

// Write puts data in path, owner-only (0600), through a hidden file beside
// it that is synced and renamed over path, then the folder synced: a crash
// leaves the old file or the new one, whole.
func Write(path string, data []byte) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*") // 0600
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // nothing left once renamed
	_, err = tmp.Write(data)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
