package backup

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	waitpkg "github.com/keyd-dev/keyd/internal/wait"

	"github.com/robfig/cron/v3"
)

// DefaultKeep is how many scheduled backups a folder keeps by default.
const DefaultKeep = 48

// Schedule writes a backup of Source to To at each time of When, keeping
// the newest Keep. Its files are named keyd-TIME.backup (UTC, so names
// sort by age); To only ever shows whole ones.
type Schedule struct {
	When    cron.Schedule
	To      Destination
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
// last success is what says backups stopped. A backup still running when
// the next is due is abandoned (no part of it appears; a store that had
// received it whole before it stopped may still keep it) and reported as
// failed: a store that stops answering never holds the schedule.
func (s *Schedule) Run(ctx context.Context) error {
	wait := s.Wait
	if wait == nil {
		wait = func(ctx context.Context, d time.Duration) error {
			if !waitpkg.Sleep(ctx, d) {
				return ctx.Err()
			}
			return nil
		}
	}
	for {
		now := s.Now()
		if err := wait(ctx, s.When.Next(now).Sub(now)); err != nil {
			return nil // ctx ended: a clean stop
		}
		start := s.Now()
		next := s.When.Next(start)
		bctx, cancel := context.WithTimeout(ctx, next.Sub(start))
		path, m, err := s.Once(bctx)
		cancel()
		if ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, context.DeadlineExceeded) {
			err = fmt.Errorf("the backup did not finish before the next one was due (%s): %w", next.UTC().Format(time.RFC3339), err)
		}
		if s.Done != nil {
			s.Done(path, m, err)
		}
	}
}

// Once writes one backup now, and then removes the oldest past Keep. It
// returns the backup's name.
func (s *Schedule) Once(ctx context.Context) (string, *Manifest, error) {
	now := s.Now().UTC()
	name := "keyd-" + now.Format(stampLayout) + ".backup"
	opts := s.Options
	opts.Now, opts.SpoolDir = now, s.To.SpoolDir()
	var m *Manifest
	err := s.To.Put(ctx, name, func(w io.Writer) error {
		var err error
		m, err = Write(ctx, w, s.Source, opts)
		return err
	})
	if err != nil {
		return "", nil, err
	}
	return name, m, s.prune(ctx)
}

// stampLayout is the time in a backup's name.
const stampLayout = "20060102T150405Z"

// prune removes the oldest backups past Keep.
func (s *Schedule) prune(ctx context.Context) error {
	names, err := s.To.List(ctx)
	if err != nil {
		return err
	}
	for _, name := range names[:max(0, len(names)-cmp.Or(s.Keep, DefaultKeep))] {
		if err := s.To.Delete(ctx, name); err != nil {
			return err
		}
	}
	return nil
}

// Newest is when the newest scheduled backup at d was made (by its
// name), zero when there is none (or d cannot be listed).
func Newest(ctx context.Context, d Destination) time.Time {
	names, err := d.List(ctx)
	if err != nil || len(names) == 0 {
		return time.Time{}
	}
	stamp := strings.TrimSuffix(strings.TrimPrefix(names[len(names)-1], "keyd-"), ".backup")
	t, _ := time.Parse(stampLayout, stamp)
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
