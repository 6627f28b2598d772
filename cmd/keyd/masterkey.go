package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/keyd-dev/keyd/backends/file"
	"github.com/keyd-dev/keyd/internal/config"
	"github.com/keyd-dev/keyd/internal/daemon"
	"github.com/keyd-dev/keyd/internal/secretfile"
)

const masterKeyUsage = `usage:
  keyd master-key new --out FILE [--config FILE]
                                              make a master key in FILE (0600); wrapped when the
                                              config's storage.file.master_key says by whom
  keyd master-key wrap --config FILE --out FILE [--key-file FILE]
                                              wrap the key in use (or --key-file's) by the config's wrapper
  keyd master-key id [--key-file FILE]        the id of a key (default: the one KEYD_MASTER_KEY holds)
  keyd master-key rotate --config FILE --new-key-file FILE
                                              seal the bbolt file under the new key (keyd stopped)`

// masterKeyCmd makes, wraps, names and rotates bbolt's master key.
func masterKeyCmd(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return usageErrorf("%s", masterKeyUsage)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log := slog.New(slog.NewTextHandler(stderr, nil))
	switch args[0] {
	case "new":
		return masterKeyNew(ctx, args[1:], stdout, stderr, log)
	case "wrap":
		return masterKeyWrap(ctx, args[1:], stdout, stderr, log)
	case "id":
		return masterKeyID(args[1:], stdout, stderr)
	case "rotate":
		return masterKeyRotate(ctx, args[1:], stdout, stderr, log)
	}
	return usageErrorf("unknown master-key command %q\n%s", args[0], masterKeyUsage)
}

func masterKeyNew(ctx context.Context, args []string, stdout, stderr io.Writer, log *slog.Logger) error {
	fs := newCLIFlags("master-key new", "keyd master-key new --out FILE [--config FILE]",
		"Make a random master key (base64 of 32 bytes) in FILE, mode 0600; the file\n"+
			"must not exist. Prints its id, never the key. With --config whose\n"+
			"storage.file.master_key has wrapped_by, FILE holds the key wrapped by that\n"+
			"Vault Transit key or PKCS#11 AES key (made when missing), never in clear.")
	out := fs.String("out", "", "the file to write (must not exist)")
	configPath := fs.String("config", "", "keyd's config: wrap the key by its storage.file.master_key")
	if a, err := fs.parse(args, stdout, stderr); err != nil {
		return err
	} else if len(a) != 0 || *out == "" {
		return usageErrorf("usage: keyd master-key new --out FILE [--config FILE]")
	}
	key, err := file.NewMasterKey()
	if err != nil {
		return err
	}
	raw, _ := file.ParseMasterKey(key)
	if *configPath != "" {
		cfg, err := config.Load(*configPath)
		if err != nil {
			return err
		}
		if m := cfg.Storage.File.MasterKey; m.WrappedBy != "" {
			res, err := daemon.WrapMasterKey(ctx, m, raw, "", *out, os.Getenv, log)
			if err != nil {
				return err
			}
			printWrapped(stdout, "wrote a new master key", *out, m, res)
			return nil
		}
	}
	f, err := os.OpenFile(*out, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(key + "\n"); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "wrote a new master key to %s (id %s)\n", *out, file.KeyID(raw))
	return nil
}

func printWrapped(stdout io.Writer, what, out string, m config.MasterKey, res daemon.WrapResult) {
	if res.Created {
		fmt.Fprintf(stdout, "made the wrapping key %s (%s)\n", m.Key, m.WrappedBy)
	}
	fmt.Fprintf(stdout, "%s to %s (id %s), wrapped by %s key %s; the key itself is written nowhere\n", what, out, res.KeyID, m.WrappedBy, m.Key)
}

func masterKeyWrap(ctx context.Context, args []string, stdout, stderr io.Writer, log *slog.Logger) error {
	fs := newCLIFlags("master-key wrap", "keyd master-key wrap --config FILE --out FILE [--key-file FILE]",
		"Wrap a master key by the Vault Transit key or PKCS#11 AES key the config's\n"+
			"storage.file.master_key names (made when missing), into --out (0600). The\n"+
			"key is the config's master_key_file (or KEYD_MASTER_KEY), or --key-file's;\n"+
			"in clear or already wrapped (then wrapped again, under the newest version of\n"+
			"the wrapping key: after rotating a Transit key, say). It is the same master\n"+
			"key, so the bbolt file needs nothing; point master_key_file at --out and\n"+
			"destroy a key file in clear. --out may be the file being wrapped again.")
	configPath := fs.String("config", "", "keyd's config (its storage.file.master_key: who wraps)")
	out := fs.String("out", "", "the file to write")
	keyFile := fs.String("key-file", "", "the key to wrap (default: the config's master_key_file or KEYD_MASTER_KEY)")
	if a, err := fs.parse(args, stdout, stderr); err != nil {
		return err
	} else if len(a) != 0 || *configPath == "" || *out == "" {
		return usageErrorf("usage: keyd master-key wrap --config FILE --out FILE [--key-file FILE]")
	}
	cfg, err := config.Load(*configPath)
	if err != nil {
		return err
	}
	fc := cfg.Storage.File
	var key []byte
	from := *keyFile
	if from == "" {
		from = fc.MasterKeyFile
	}
	if from == "" { // KEYD_MASTER_KEY
		fc.MasterKey.WrappedBy = ""
		if key, err = daemon.LoadMasterKey(ctx, fc, os.Getenv, log); err != nil {
			return err
		}
	}
	res, err := daemon.WrapMasterKey(ctx, cfg.Storage.File.MasterKey, key, from, *out, os.Getenv, log)
	if err != nil {
		return err
	}
	printWrapped(stdout, "wrote the master key", *out, cfg.Storage.File.MasterKey, res)
	if *out != cfg.Storage.File.MasterKeyFile {
		fmt.Fprintln(stdout, "next: point storage.file.master_key_file at "+*out+" (and unset KEYD_MASTER_KEY), start keyd, then destroy any copy of the key in clear.")
	}
	return nil
}

func masterKeyID(args []string, stdout, stderr io.Writer) error {
	fs := newCLIFlags("master-key id", "keyd master-key id [--key-file FILE]", "Print the id of a master key: the key file's (a wrapped file names it), or\nKEYD_MASTER_KEY's. keyd names keys by id in its errors (\"sealed under the\nmaster key of id ...\").")
	keyFile := fs.String("key-file", "", "master key file (default: KEYD_MASTER_KEY)")
	if a, err := fs.parse(args, stdout, stderr); err != nil {
		return err
	} else if len(a) != 0 {
		return usageErrorf("usage: keyd master-key id [--key-file FILE]")
	}
	fc := config.File{}
	getenv := os.Getenv
	if *keyFile != "" {
		fc.MasterKeyFile, getenv = *keyFile, func(string) string { return "" }
	}
	id, err := daemon.MasterKeyID(fc, getenv)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, id)
	return nil
}

func masterKeyRotate(ctx context.Context, args []string, stdout, stderr io.Writer, log *slog.Logger) error {
	fs := newCLIFlags("master-key rotate", "keyd master-key rotate --config FILE --new-key-file FILE",
		"Seal every key and record of the bbolt file of FILE under the master key in\n"+
			"--new-key-file instead of the one FILE (or KEYD_MASTER_KEY) gives. Stop keyd\n"+
			"first. The file is written anew beside the old one and swapped in whole:\n"+
			"killed at any moment, one of the two keys opens it whole. Then point the\n"+
			"config (or KEYD_MASTER_KEY) at the new key and start keyd. A wrapped new key\n"+
			"is unwrapped by the config's storage.file.master_key.")
	configPath := fs.String("config", "", "keyd's config file (its storage.file: the database and the key in use)")
	newKeyFile := fs.String("new-key-file", "", "the new master key (keyd master-key new makes one; owner-only)")
	if a, err := fs.parse(args, stdout, stderr); err != nil {
		return err
	} else if len(a) != 0 || *configPath == "" || *newKeyFile == "" {
		return usageErrorf("usage: keyd master-key rotate --config FILE --new-key-file FILE")
	}
	cfg, err := config.Load(*configPath)
	if err != nil {
		return err
	}
	if err := secretfile.Check(*newKeyFile); err != nil {
		return fmt.Errorf("--new-key-file: %w", err)
	}
	st, oldID, newID, err := daemon.RotateMasterKey(ctx, cfg, *newKeyFile, os.Getenv, log)
	if err != nil {
		return err
	}
	where := "storage.file.master_key_file at " + *newKeyFile
	if cfg.Storage.File.MasterKeyFile == "" {
		where = "KEYD_MASTER_KEY at the content of " + *newKeyFile
	}
	fmt.Fprintf(stdout, "ok: %s is sealed under master key %s: %d key set(s), %d key(s), %d record(s)\n", cfg.Storage.File.Path, newID, st.KeySets, st.Keys, st.Records)
	fmt.Fprintln(stdout, strings.Join([]string{
		"next: point " + where + ", then start keyd.",
		"The old key (" + oldID + ") no longer opens this file; it still opens copies of the file made before",
		"(disk or volume snapshots): destroy it once those are gone. keyd backups (keyd backup) never need it.",
	}, "\n"))
	return nil
}
