package backup

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"gocloud.dev/blob"
)

// Destination holds scheduled backups: a folder (Folder) or an object
// store bucket (Bucket). Names are keyd-TIME.backup.
type Destination interface {
	// Put stores what write writes under name: whole, or not at all.
	Put(ctx context.Context, name string, write func(io.Writer) error) error
	// List names the backups there, oldest first.
	List(ctx context.Context) ([]string, error)
	// Delete removes the backup called name.
	Delete(ctx context.Context, name string) error
	// SpoolDir is where a backup's ciphertext is spooled while it is made.
	SpoolDir() string
	String() string
}

// isBackup reports whether name is a scheduled backup's.
func isBackup(name string) bool {
	return strings.HasPrefix(name, "keyd-") && strings.HasSuffix(name, ".backup")
}

// Folder is a folder of backups: each written to a hidden file, synced,
// renamed, and the folder synced, so it only ever shows whole backups.
type Folder string

// Put implements Destination, and removes hidden files a crash left
// behind over a day ago.
func (f Folder) Put(_ context.Context, name string, write func(io.Writer) error) error {
	dir := string(f)
	tmp, err := os.CreateTemp(dir, ".keyd-*.partial")
	if err != nil {
		return err
	}
	defer func() { _ = os.Remove(tmp.Name()) }() // gone once renamed
	err = write(tmp)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), filepath.Join(dir, name))
	}
	if err == nil {
		err = syncDir(dir)
	}
	if err != nil {
		return err
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), ".keyd-") {
			continue
		}
		if info, err := e.Info(); err == nil && time.Since(info.ModTime()) > 24*time.Hour {
			_ = os.Remove(filepath.Join(dir, e.Name()))
		}
	}
	return nil
}

// List implements Destination.
func (f Folder) List(context.Context) ([]string, error) { return List(string(f)) }

// Delete implements Destination.
func (f Folder) Delete(_ context.Context, name string) error {
	return os.Remove(filepath.Join(string(f), name))
}

// SpoolDir implements Destination: the folder itself.
func (f Folder) SpoolDir() string { return string(f) }

func (f Folder) String() string { return string(f) }

// List names the scheduled backups in dir, oldest first.
func List(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, e := range entries {
		if n := e.Name(); isBackup(n) && e.Type().IsRegular() {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	return names, nil
}

// Bucket is an object store bucket of backups (internal/bucket opens it):
// an object appears when its upload completes, and a failed backup
// aborts its upload, so the bucket only ever shows whole backups.
type Bucket struct {
	B     *blob.Bucket
	URL   string // for messages; no credentials (they are never in it)
	Spool string // where the ciphertext is spooled (default: the system's temporary folder)
}

// Put implements Destination.
func (b *Bucket) Put(ctx context.Context, name string, write func(io.Writer) error) error {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	w, err := b.B.NewWriter(wctx, name, &blob.WriterOptions{ContentType: "application/octet-stream"})
	if err != nil {
		return err
	}
	if err := write(w); err != nil {
		cancel() // before Close: the upload is abandoned, nothing appears
		_ = w.Close()
		return err
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("upload %s: %w", name, err)
	}
	return nil
}

// List implements Destination.
func (b *Bucket) List(ctx context.Context) ([]string, error) {
	var names []string
	it := b.B.List(&blob.ListOptions{Prefix: "keyd-"})
	for {
		obj, err := it.Next(ctx)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err
		}
		if isBackup(obj.Key) && !obj.IsDir {
			names = append(names, obj.Key)
		}
	}
	slices.Sort(names)
	return names, nil
}

// Delete implements Destination.
func (b *Bucket) Delete(ctx context.Context, name string) error { return b.B.Delete(ctx, name) }

// SpoolDir implements Destination.
func (b *Bucket) SpoolDir() string { return b.Spool }

func (b *Bucket) String() string { return b.URL }
