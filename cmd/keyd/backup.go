package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"filippo.io/age"

	"github.com/keyd-dev/keyd/backup"
	"github.com/keyd-dev/keyd/client"
	"github.com/keyd-dev/keyd/internal/config"
	"github.com/keyd-dev/keyd/internal/daemon"
	"github.com/keyd-dev/keyd/internal/secretfile"
)

func init() {
	clientCommands["backup"] = clientCommand{
		about: "Save a backup of every key set, private keys included, and all token state\n" +
			"(revocations, refresh logins), encrypted to age recipients: whoever runs this\n" +
			"needs no secret and cannot read the file; restore it with keyd restore and an\n" +
			"identity (admin). The file is written beside --out, checked whole, then renamed.\n" +
			"keyd backup inspect FILE shows what a backup holds.",
		flags: backupFlags,
	}
}

type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(s string) error { *l = append(*l, s); return nil }

func backupFlags(fs *flag.FlagSet) func(context.Context, *client.Client, []string, cmdIO) error {
	var recipients listFlag
	fs.Var(&recipients, "recipient", "age recipient (age1...) the backup is encrypted to; repeat for several")
	recipientsFile := fs.String("recipients-file", "", "file of age recipients, one a line (# comments)")
	out := fs.String("out", "", "the backup file (default keyd-TIME.backup here)")
	return func(ctx context.Context, c *client.Client, _ []string, o cmdIO) error {
		if *recipientsFile != "" {
			more, err := backup.ReadRecipientsFile(*recipientsFile)
			if err != nil {
				return fmt.Errorf("--recipients-file: %w", err)
			}
			recipients = append(recipients, more...)
		}
		if _, err := backup.ParseRecipients(recipients); err != nil {
			return usageErrorf("%v (--recipient or --recipients-file)", err)
		}
		path := *out
		if path == "" {
			path = "keyd-" + time.Now().UTC().Format("20060102T150405Z") + ".backup"
		}
		return saveBackup(ctx, c, recipients, path, o)
	}
}

// saveBackup writes the backup beside path, checks it is whole against its
// manifest, and renames it into place: path is a whole backup or absent.
func saveBackup(ctx context.Context, c *client.Client, recipients []string, path string, o cmdIO) error {
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer func() { _ = os.Remove(tmp.Name()) }()
	start := time.Now()
	n, err := c.Backup(ctx, recipients, tmp)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	f, err := os.Open(tmp.Name())
	if err != nil {
		return err
	}
	m, err := backup.Inspect(f, true)
	_ = f.Close()
	if err != nil {
		return fmt.Errorf("the backup keyd sent is not whole (%d bytes received): %w", n, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	fmt.Fprintf(o.stderr, "backup written in %v: %d bytes, encrypted to %d recipient(s)\n", time.Since(start).Round(time.Millisecond), n, len(m.Recipients))
	printManifest(o.stdout, path, m)
	return nil
}

func printManifest(w io.Writer, path string, m *backup.Manifest) {
	fmt.Fprintf(w, "%s: keyd backup made %s by keyd %s from %s\n", path, m.CreatedAt.Format(time.RFC3339), m.KeydVersion, m.Source)
	fmt.Fprintf(w, "  encrypted to: %s\n", strings.Join(m.Recipients, ", "))
	fmt.Fprintf(w, "  %d key set(s), %d revocation(s), records %v\n", len(m.KeySets), m.Revocations, m.Records)
	for _, ks := range m.KeySets {
		line := fmt.Sprintf("    %-20s %-6s %d key(s)", ks.Name, ks.Algorithm, ks.Keys)
		for name, n := range ks.Custody {
			line += fmt.Sprintf(", %d held by custody %s (restored as references: they sign only where that custody holds them)", n, name)
		}
		fmt.Fprintln(w, line)
	}
}

// backupInspect shows a backup's manifest and checks the file is whole;
// with --identity it decrypts and checks every entry too.
func backupInspect(args []string, stdout, stderr io.Writer) error {
	fs := newCLIFlags("backup inspect", "keyd backup inspect [--identity FILE] BACKUP",
		"Show what a backup holds (its manifest, in clear) and check the file is whole,\nwithout any secret. With --identity, decrypt it and check every entry as a\nrestore would, writing nothing.")
	idFile := fs.String("identity", "", "age identity file (AGE-SECRET-KEY-1...) to check the entries too")
	a, err := fs.parse(args, stdout, stderr)
	if err != nil {
		return err
	}
	if len(a) != 1 {
		return usageErrorf("usage: keyd backup inspect [--identity FILE] BACKUP")
	}
	f, err := os.Open(a[0])
	if err != nil {
		return err
	}
	defer f.Close()
	m, err := backup.Inspect(f, true)
	if err != nil {
		return err
	}
	printManifest(stdout, a[0], m)
	if *idFile == "" {
		fmt.Fprintln(stdout, "  whole: the encrypted part matches the manifest's size and checksum")
		return nil
	}
	ids, err := readIdentities(*idFile)
	if err != nil {
		return err
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return err
	}
	if _, err := backup.Check(f, ids); err != nil {
		return err
	}
	fmt.Fprintln(stdout, "  checked: it decrypts, every entry is valid and matches the sealed manifest")
	return nil
}

func readIdentities(path string) ([]age.Identity, error) {
	raw, err := secretfile.Read(path) // owner-only, as every secret file
	if err != nil {
		return nil, fmt.Errorf("--identity: %w", err)
	}
	ids, err := backup.ParseIdentities(strings.NewReader(string(raw)))
	if err != nil {
		return nil, fmt.Errorf("--identity %s: %w", path, err)
	}
	return ids, nil
}

func restoreCmd(args []string, stdout, stderr io.Writer) error {
	fs := newCLIFlags("restore", "keyd restore --config FILE --identity FILE [--replace] BACKUP",
		"Write a backup into the stores of FILE (its key store, and its token state,\n"+
			"Redis too): an empty store of any backend, so this is also how a deployment\n"+
			"moves (bbolt to Vault and back). Stop keyd first. The whole file is checked\n"+
			"before anything is written; keyd refuses to start on a store whose restore did\n"+
			"not finish, and running this again with the same backup finishes it.")
	configPath := fs.String("config", "", "keyd's config file (its storage: where to restore)")
	idFile := fs.String("identity", "", "age identity file (AGE-SECRET-KEY-1...) that decrypts the backup (owner-only)")
	replace := fs.Bool("replace", false, "restore into a store that holds key sets: the backup's replace those of the same name")
	a, err := fs.parse(args, stdout, stderr)
	if err != nil {
		return err
	}
	if len(a) != 1 || *configPath == "" || *idFile == "" {
		return usageErrorf("usage: keyd restore --config FILE --identity FILE [--replace] BACKUP")
	}
	cfg, err := config.Load(*configPath)
	if err != nil {
		return err
	}
	ids, err := readIdentities(*idFile)
	if err != nil {
		return err
	}
	f, err := os.Open(a[0])
	if err != nil {
		return err
	}
	defer f.Close()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	start := time.Now()
	res, err := daemon.Restore(ctx, cfg, f, ids, *replace, os.Getenv, slog.New(slog.NewTextHandler(stderr, nil)))
	if errors.Is(err, backup.ErrDamaged) || errors.Is(err, backup.ErrIdentity) {
		return fmt.Errorf("%w; nothing was written", err)
	}
	if err != nil {
		return err
	}
	printManifest(stdout, a[0], res.Manifest)
	fmt.Fprintf(stdout, "ok: restored %d key set(s), %d revocation(s), %d record(s) in %v (%d expired, not written)\n",
		res.KeySets, res.Revocations, res.Records, time.Since(start).Round(time.Millisecond), res.Expired)
	if res.Resumed {
		fmt.Fprintln(stdout, "  (this finished a restore of the same backup that had stopped)")
	}
	if len(res.Kept) > 0 {
		fmt.Fprintf(stdout, "  key sets of the store the backup does not hold, kept as they were: %s\n", strings.Join(res.Kept, ", "))
	}
	return nil
}
