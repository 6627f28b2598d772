package main

import (
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/keyd-dev/keyd/backends/file"
	"github.com/keyd-dev/keyd/internal/config"
	"github.com/keyd-dev/keyd/internal/daemon"
	"github.com/keyd-dev/keyd/internal/secretfile"
)

const masterKeyUsage = `usage:
  keyd master-key new --out FILE              make a master key in FILE (0600)
  keyd master-key id [--key-file FILE]        the id of a key (default: the one KEYD_MASTER_KEY holds)
  keyd master-key rotate --config FILE --new-key-file FILE
                                              seal the bbolt file under the new key (keyd stopped)`

// masterKeyCmd makes, names and rotates bbolt's master key.
func masterKeyCmd(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return usageErrorf("%s", masterKeyUsage)
	}
	switch args[0] {
	case "new":
		return masterKeyNew(args[1:], stdout, stderr)
	case "id":
		return masterKeyID(args[1:], stdout, stderr)
	case "rotate":
		return masterKeyRotate(args[1:], stdout, stderr)
	}
	return usageErrorf("unknown master-key command %q\n%s", args[0], masterKeyUsage)
}

func masterKeyNew(args []string, stdout, stderr io.Writer) error {
	fs := newCLIFlags("master-key new", "keyd master-key new --out FILE", "Make a random master key (base64 of 32 bytes) in FILE, mode 0600; the file\nmust not exist. Prints its id, never the key.")
	out := fs.String("out", "", "the file to write (must not exist)")
	if a, err := fs.parse(args, stdout, stderr); err != nil {
		return err
	} else if len(a) != 0 || *out == "" {
		return usageErrorf("usage: keyd master-key new --out FILE")
	}
	key, err := file.NewMasterKey()
	if err != nil {
		return err
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
	raw, _ := file.ParseMasterKey(key)
	fmt.Fprintf(stdout, "wrote a new master key to %s (id %s)\n", *out, file.KeyID(raw))
	return nil
}

func masterKeyID(args []string, stdout, stderr io.Writer) error {
	fs := newCLIFlags("master-key id", "keyd master-key id [--key-file FILE]", "Print the id of a master key: the key file's, or KEYD_MASTER_KEY's. keyd\nnames keys by id in its errors (\"sealed under the master key of id ...\").")
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

func masterKeyRotate(args []string, stdout, stderr io.Writer) error {
	fs := newCLIFlags("master-key rotate", "keyd master-key rotate --config FILE --new-key-file FILE",
		"Seal every key and record of the bbolt file of FILE under the master key in\n"+
			"--new-key-file instead of the one FILE (or KEYD_MASTER_KEY) gives. Stop keyd\n"+
			"first. The file is written anew beside the old one and swapped in whole:\n"+
			"killed at any moment, one of the two keys opens it whole. Then point the\n"+
			"config (or KEYD_MASTER_KEY) at the new key and start keyd.")
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
	st, oldID, newID, err := daemon.RotateMasterKey(cfg, *newKeyFile, os.Getenv)
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
