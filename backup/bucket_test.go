package backup_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"slices"
	"testing"
	"time"

	"filippo.io/age"
	"github.com/robfig/cron/v3"

	"github.com/keyd-dev/keyd/backup"
	"github.com/keyd-dev/keyd/internal/bucket"
	"github.com/keyd-dev/keyd/internal/testblob"
)

// Scheduled backups into each object store, a real server (SeaweedFS's
// S3 API, fake-gcs-server, Azurite): the bucket keeps the newest Keep,
// each whole (it decrypts and checks), and a backup that fails half-way
// leaves no object behind.
func TestScheduleIntoBuckets(t *testing.T) {
	src, _ := bolt(t)
	fill(t, src)
	id, recips := identity(t)
	hourly, _ := cron.ParseStandard("@hourly")
	for _, start := range []func(testing.TB) *testblob.Server{testblob.S3, testblob.GCS, testblob.Azure} {
		srv := start(t)
		t.Run(srv.Scheme, func(t *testing.T) {
			srv.Setenv(t)
			ctx := context.Background()
			bk, err := bucket.Open(ctx, srv.URL)
			if err != nil {
				t.Fatal(err)
			}
			defer bk.Close()
			to := &backup.Bucket{B: bk, URL: srv.URL, Spool: t.TempDir()}
			clock := now
			s := &backup.Schedule{When: hourly, To: to, Keep: 2, Source: src, Options: backup.Options{Recipients: recips}, Now: func() time.Time { return clock }}
			var made []string
			for range 4 {
				clock = clock.Add(time.Hour)
				name, m, err := s.Once(ctx)
				if err != nil || m.Revocations == 0 {
					t.Fatalf("backup to %s: %v", srv.Scheme, err)
				}
				made = append(made, name)
			}
			names, err := to.List(ctx)
			if err != nil || !slices.Equal(names, made[2:]) {
				t.Fatalf("the bucket holds %v (%v), want the newest 2 of %v", names, err, made)
			}
			if got := backup.Newest(ctx, to); !got.Equal(clock) {
				t.Fatalf("Newest = %v, want %v", got, clock)
			}
			raw, err := bk.ReadAll(ctx, names[1])
			if err != nil {
				t.Fatal(err)
			}
			if _, err := backup.Check(bytes.NewReader(raw), []age.Identity{id}); err != nil {
				t.Fatalf("the newest backup read back from %s: %v", srv.Scheme, err)
			}
			// Half a backup, then a failure: nothing appears.
			err = to.Put(ctx, "keyd-20991231T000000Z.backup", func(w io.Writer) error {
				_, _ = w.Write(bytes.Repeat([]byte("x"), 1<<20))
				return errors.New("the store stopped answering")
			})
			if err == nil {
				t.Fatal("a failed backup was stored")
			}
			if names, _ := to.List(ctx); len(names) != 2 || slices.Contains(names, "keyd-20991231T000000Z.backup") {
				t.Fatalf("after a failed backup the bucket holds %v", names)
			}
		})
	}
}

// TestFrozenBucketDoesNotHoldTheSchedule: with the S3 server stopped
// (SIGSTOP), each scheduled backup is abandoned when the next is due and
// reported as failed, no part of one appears, and once the server answers
// again the next backup is made.
func TestFrozenBucketDoesNotHoldTheSchedule(t *testing.T) {
	src, _ := bolt(t)
	fill(t, src)
	id, recips := identity(t)
	srv := testblob.S3(t)
	srv.Setenv(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	bk, err := bucket.Open(ctx, srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer bk.Close()
	to := &backup.Bucket{B: bk, URL: srv.URL, Spool: t.TempDir()}
	every2s, _ := cron.ParseStandard("@every 2s")
	results := make(chan error, 16)
	s := &backup.Schedule{When: every2s, To: to, Source: src, Options: backup.Options{Recipients: recips}, Now: time.Now,
		Done: func(_ string, _ *backup.Manifest, err error) { results <- err }}
	if err := srv.Freeze(); err != nil {
		t.Fatal(err)
	}
	frozen := true
	defer func() {
		if frozen {
			_ = srv.Thaw()
		}
	}()
	go func() { _ = s.Run(ctx) }()
	select {
	case err := <-results:
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("a backup into the stopped store: %v, want it abandoned when the next was due", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the stopped store held the schedule: no backup was reported")
	}
	if err := srv.Thaw(); err != nil {
		t.Fatal(err)
	}
	frozen = false
	deadline := time.After(30 * time.Second)
	for {
		select {
		case err := <-results:
			if err != nil {
				continue // one abandoned while frozen, or in flight at the thaw
			}
			// Every object is a whole backup: an abandoned upload that
			// reached the server whole before it stopped may be stored
			// when it resumes, never a part of one.
			names, err := to.List(ctx)
			if err != nil || len(names) == 0 {
				t.Fatalf("after the thaw the bucket holds %v (%v)", names, err)
			}
			for _, name := range names {
				raw, err := bk.ReadAll(ctx, name)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := backup.Check(bytes.NewReader(raw), []age.Identity{id}); err != nil {
					t.Fatalf("%s in the bucket after the thaw: %v", name, err)
				}
			}
			return
		case <-deadline:
			t.Fatal("no backup succeeded after the store answered again")
		}
	}
}
