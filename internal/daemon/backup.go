package daemon

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"sync"
	"time"

	"filippo.io/age"

	"github.com/keyd-dev/keyd/backup"
	"github.com/keyd-dev/keyd/internal/bucket"
	"github.com/keyd-dev/keyd/internal/config"
	"github.com/keyd-dev/keyd/internal/version"
	"github.com/keyd-dev/keyd/refresh"
	"github.com/keyd-dev/keyd/rotation"
	"github.com/keyd-dev/keyd/tokenstate/records"
)

// backupState is what a backup of this daemon reads: its key store, its
// token state wherever it lives, and the key store's own records.
func (d *daemon) backupState() backup.State {
	return backup.State{KeySets: d.store, Tokens: d.tokens, Records: d.stateRecords, Kinds: refresh.Kinds, Meta: d.store}
}

// makeBackup writes a backup of everything keyd holds to w, encrypted to
// recipients (POST /v1/backup).
func (d *daemon) makeBackup(ctx context.Context, w io.Writer, recipients []string) (*backup.Manifest, error) {
	start := time.Now()
	m, err := backup.Write(ctx, w, d.backupState(), backup.Options{
		Recipients: recipients, KeydVersion: version.Get().Version, Source: storeName(d.cfg.Storage), Now: d.o.Now(),
	})
	d.releaseMapped("backup")
	if err != nil {
		return nil, err
	}
	d.log.Info("backup made", "keysets", len(m.KeySets), "revocations", m.Revocations, "records", m.Records,
		"bytes", m.Sealed.Bytes, "took", time.Since(start).Round(time.Millisecond))
	return m, nil
}

// storeName names a storage config without any credential: its backend
// and where its token state lives.
func storeName(sc config.Storage) string {
	name := sc.Backend
	switch sc.Backend {
	case "file":
		name += ":" + sc.File.Path
	case "vault":
		name += ":" + sc.Vault.Address + "/" + sc.Vault.Mount + "/" + sc.Vault.Prefix
	}
	if sc.TokenState.Backend == "redis" {
		name += ", token state on redis"
	}
	return name
}

// Restore writes the backup in f into the stores of cfg (keyd stopped: bbolt
// refuses a second opener, and a running keyd would not see what is
// written under it): its key store, and its token state wherever cfg keeps
// it (Redis too). See backup.Restore for what is refused and how a restore
// stopped half-way is finished.
func Restore(ctx context.Context, cfg *config.Config, f io.ReadSeeker, ids []age.Identity, replace bool, getenv func(string) string, log *slog.Logger) (*backup.Result, error) {
	eng, err := openStore(ctx, cfg.Storage, getenv, log)
	if err != nil {
		return nil, err
	}
	store := eng.Store
	defer func() { _ = store.Close() }()
	dst := backup.State{KeySets: store, Tokens: records.New(store), Records: store, Kinds: refresh.Kinds, Meta: store}
	opts := backup.RestoreOptions{Replace: replace}
	var target string
	if ts := cfg.Storage.TokenState; ts.Backend == "redis" {
		s, recs, t, err := openRedisState(ctx, ts, store, nil, log)
		if err != nil {
			return nil, fmt.Errorf("storage.token_state: %w", err)
		}
		defer func() { _ = s.Close() }()
		dst.Tokens, dst.Records, target = s, recs, t
		opts.Expiry = refresh.RecordExpiry
	}
	res, err := backup.Restore(ctx, f, ids, dst, opts)
	if err != nil {
		return nil, err
	}
	if target != "" { // the token state is in that Redis: no move at start
		if err := setMoved(ctx, store, movedRecord{To: target, At: time.Now().UTC()}); err != nil {
			return nil, err
		}
	}
	return res, nil
}

// buildBackups makes the schedule of backup: (none when unset): its
// recipients, its folder (0700), and what each backup tells the log, the
// metrics and /readyz.
func (d *daemon) buildBackups(ctx context.Context) error {
	b := d.cfg.Backup
	if b.Schedule == "" {
		return nil
	}
	recipients, err := backupRecipients(b)
	if err != nil {
		return err
	}
	when, err := rotation.ParseSchedule(b.Schedule) // validated
	if err != nil {
		return fmt.Errorf("backup.schedule: %w", err)
	}
	to, err := d.backupDestination(ctx, b)
	if err != nil {
		return fmt.Errorf("backup.to: %w", err)
	}
	d.met.BackupScheduled(rotation.MinGap(when))
	if last := backup.Newest(ctx, to); !last.IsZero() {
		d.lastBackup.set(last, nil)
		d.met.BackupDone(last, nil)
	} else {
		d.met.BackupDone(d.o.Now(), nil) // the alert counts two periods from the start
	}
	d.backups = &backup.Schedule{When: when, To: to, Keep: b.Keep, Source: d.backupState(), Now: d.o.Now,
		Options: backup.Options{Recipients: recipients, KeydVersion: version.Get().Version, Source: storeName(d.cfg.Storage)},
		Done: func(name string, m *backup.Manifest, err error) {
			d.releaseMapped("backup")
			now := d.o.Now()
			d.lastBackup.set(now, err)
			d.met.BackupDone(now, err)
			if err != nil {
				d.log.Error("scheduled backup failed", "to", to.String(), "err", err)
				return
			}
			d.log.Info("scheduled backup written", "to", to.String(), "name", name, "keysets", len(m.KeySets), "revocations", m.Revocations, "bytes", m.Sealed.Bytes)
		}}
	d.log.Info("scheduled backups", "schedule", b.Schedule, "to", to.String(), "keep", cmp.Or(b.Keep, backup.DefaultKeep), "recipients", len(recipients))
	return nil
}

// backupDestination is where backup.to points: a folder (made 0700), or
// an object store bucket (closed with the daemon), its ciphertext spooled
// in the system's temporary folder.
func (d *daemon) backupDestination(ctx context.Context, b config.Backup) (backup.Destination, error) {
	if !bucket.IsObjectStore(b.To) {
		dir := b.Folder()
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, err
		}
		return backup.Folder(dir), nil
	}
	bk, err := bucket.Open(ctx, b.To)
	if err != nil {
		return nil, err
	}
	d.closers = append(d.closers, func() { _ = bk.Close() })
	return &backup.Bucket{B: bk, URL: b.To, Spool: os.TempDir()}, nil
}

// backupRecipients are backup.recipients and those of its recipients_file.
func backupRecipients(b config.Backup) ([]string, error) {
	out := slices.Clone(b.Recipients)
	if b.RecipientsFile != "" {
		more, err := backup.ReadRecipientsFile(b.RecipientsFile)
		if err != nil {
			return nil, fmt.Errorf("backup.recipients_file: %w", err)
		}
		out = append(out, more...)
	}
	if _, err := backup.ParseRecipients(out); err != nil {
		return nil, fmt.Errorf("backup recipients: %w", err)
	}
	return out, nil
}

// backupStatus is the last scheduled backup, for /readyz.
type backupStatus struct {
	mu   sync.Mutex
	last time.Time // the last success
	err  error     // the last attempt's failure, nil when it succeeded
}

func (b *backupStatus) set(at time.Time, err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.err = err; err == nil {
		b.last = at
	}
}

func (b *backupStatus) get() (time.Time, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.last, b.err
}

// lastBackupFunc reports the scheduled backups to /readyz, nil when none
// are scheduled.
func (d *daemon) lastBackupFunc() func() (time.Time, error) {
	if d.backups == nil {
		return nil
	}
	return d.lastBackup.get
}
