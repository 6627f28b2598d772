package backup

import (
	"cmp"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/robfig/cron/v3"
)

// DefaultKeep is how many scheduled backups a folder keeps by default.
const DefaultKeep = 48

// Schedule writes a backup of Source into Dir at each time of When,
// keeping the newest Keep. Its files are named keyd-TIME.backup (UTC, so
// names sort by age); each is written to a hidden file, synced, then
// renamed: the folder only ever shows whole backups.
type Schedule struct {
	When    cron.Schedule
	Dir     string
	Keep    int // default DefaultKeep
	Source  State
	Options Options // Recipients, KeydVersion, Source; Now and SpoolDir are set per backup
	Now     func() time.Time
	// Wait returns after d, or with ctx's error when it ends first
	// (default: a timer; tests give a clock of their own).
	Wait func(ctx context.Context, d time.Duration) error
	// Done is told of each scheduled backup: its path and manifest, or
	// why it failed (logs, metrics).
	Done func(path string, m *Manifest, err error)
}

// Run makes a backup at each time of When until ctx ends. A failed backup
// is reported (Done) and the next comes at its time: the alert on the
// last success is what says backups stopped.
func (s *Schedule) Run(ctx context.Context) error {
	wait := s.Wait
	if wait == nil {
		wait = sleep
	}
	for {
		now := s.Now()
		if err := wait(ctx, s.When.Next(now).Sub(now)); err != nil {
			return nil // ctx ended: a clean stop
		}
		path, m, err := s.Once(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if s.Done != nil {
			s.Done(path, m, err)
		}
	}
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// Once writes one backup now, and then removes the oldest past Keep.
func (s *Schedule) Once(ctx context.Context) (string, *Manifest, error) {
	now := s.Now().UTC()
	path := filepath.Join(s.Dir, "keyd-"+now.Format("20060102T150405Z")+".backup")
	tmp, err := os.CreateTemp(s.Dir, ".keyd-*.partial")
	if err != nil {
		return "", nil, fmt.Errorf("backup.to: %w", err)
	}
	defer func() { _ = os.Remove(tmp.Name()) }() // gone once renamed
	opts := s.Options
	opts.Now, opts.SpoolDir = now, s.Dir
	m, err := Write(ctx, tmp, s.Source, opts)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err == nil {
		err = syncDir(s.Dir)
	}
	if err != nil {
		return "", nil, err
	}
	return path, m, s.prune(now)
}

// prune removes the oldest backups past Keep, and hidden files a crash
// left behind over a day ago.
func (s *Schedule) prune(now time.Time) error {
	names, err := List(s.Dir)
	if err != nil {
		return err
	}
	for _, name := range names[:max(0, len(names)-cmp.Or(s.Keep, DefaultKeep))] {
		if err := os.Remove(filepath.Join(s.Dir, name)); err != nil {
			return err
		}
	}
	entries, _ := os.ReadDir(s.Dir)
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), ".keyd-") {
			continue
		}
		if info, err := e.Info(); err == nil && now.Sub(info.ModTime()) > 24*time.Hour {
			_ = os.Remove(filepath.Join(s.Dir, e.Name()))
		}
	}
	return nil
}

// List names the scheduled backups in dir, oldest first.
func List(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, e := range entries {
		if n := e.Name(); strings.HasPrefix(n, "keyd-") && strings.HasSuffix(n, ".backup") && e.Type().IsRegular() {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	return names, nil
}

// Newest is when the newest scheduled backup in dir was made (by its
// name), zero when there is none.
func Newest(dir string) time.Time {
	names, err := List(dir)
	if err != nil || len(names) == 0 {
		return time.Time{}
	}
	stamp := strings.TrimSuffix(strings.TrimPrefix(names[len(names)-1], "keyd-"), ".backup")
	t, _ := time.Parse("20060102T150405Z", stamp)
	return t
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
