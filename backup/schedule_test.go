package backup_test

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/robfig/cron/v3"

	"github.com/keyd-dev/keyd/backup"
)

// TestScheduleKeepsTheNewest: hourly backups on an injected clock; the
// folder keeps the newest Keep, each whole, and a failed backup is told
// and the next one comes at its time.
func TestScheduleKeepsTheNewest(t *testing.T) {
	src, _ := bolt(t)
	fill(t, src)
	_, recips := identity(t)
	dir := t.TempDir()
	hourly, _ := cron.ParseStandard("@hourly")
	clock := now.Add(30 * time.Minute)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var made []string
	var failures int
	s := &backup.Schedule{When: hourly, To: backup.Folder(dir), Keep: 3, Source: src, Options: backup.Options{Recipients: recips},
		Now: func() time.Time { return clock },
		Wait: func(ctx context.Context, d time.Duration) error {
			if err := ctx.Err(); err != nil {
				return err
			}
			clock = clock.Add(d)
			return nil
		},
		Done: func(path string, m *backup.Manifest, err error) {
			if err != nil {
				failures++
				if err := os.Rename(dir+".away", dir); err != nil { // the folder is back
					t.Fatal(err)
				}
				return
			}
			made = append(made, filepath.Base(path))
			if len(made) == 2 { // the folder goes away (an unmounted volume)
				if err := os.Rename(dir, dir+".away"); err != nil {
					t.Fatal(err)
				}
			}
			if len(made) == 5 {
				cancel()
			}
		}}
	if err := s.Run(ctx); err != nil {
		t.Fatal(err)
	}
	names, err := backup.List(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(made) != 5 || !slices.Equal(names, made[2:]) {
		t.Fatalf("folder holds %v, want the newest 3 of %v", names, made)
	}
	if made[0] != "keyd-20261207T130000Z.backup" {
		t.Fatalf("first backup named %s, want the first hour after the start", made[0])
	}
	for _, n := range names {
		f, err := os.Open(filepath.Join(dir, n))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := backup.Inspect(f, true); err != nil {
			t.Fatalf("%s: %v", n, err)
		}
		f.Close()
	}
	if got := backup.Newest(context.Background(), backup.Folder(dir)); !got.Equal(clock.Truncate(time.Hour)) {
		t.Fatalf("newest %v, want %v", got, clock)
	}
	if failures != 1 {
		t.Fatalf("%d failures told, want 1", failures)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != len(names) {
		t.Fatalf("the folder holds other files: %v", entries)
	}
}
