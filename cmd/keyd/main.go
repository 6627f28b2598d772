// Command keyd is the key daemon (keyd serve) and its operator CLI (keyd
// keysets, rotate, revoke, sign, verify, token).
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
	"runtime/debug"
	"syscall"

	"github.com/keyd-dev/keyd/audit"
	"github.com/keyd-dev/keyd/internal/config"
	"github.com/keyd-dev/keyd/internal/daemon"
	"github.com/keyd-dev/keyd/internal/keygen"
)

const usage = `keyd: the key daemon.

Usage:
  keyd serve [--config PATH] [--data DIR] [--listen ADDR] [--log-format text|json] [--log-level LEVEL]
      Run the daemon. Without --config: the embedded default (127.0.0.1:8080,
      bbolt in ./keyd-data, one ES256 key set "default", a generated master
      key and admin token in the data folder).

Client commands (against a running daemon; KEYD_ADDR and KEYD_TOKEN, or
--addr and --token; KEYD_CA_FILE or --ca-file to trust a private CA):
  keyd status                  readiness, store, each key set's active key and next rotation
  keyd keysets                 list key sets and their keys
  keyd rotate [--force] KEYSET rotate now (--force: even if the pending key is too young)
  keyd revoke KEYSET KID       revoke a key at once
  keyd sign [--ttl 5m] KEYSET  sign the claims JSON read from stdin; prints the token
  keyd verify KEYSET           verify the token read from stdin
  keyd reload                  make the daemon re-read its config file (as SIGHUP)
  keyd revoke-token [--reason R] KEYSET
                               revoke the token read from stdin; or --jti J --exp UNIX;
                               or --sub S: every token of that subject issued until now
  keyd revocations KEYSET      list the revocations in force

  keyd token [--name N] [--scopes S,S]
      Make a random API token; print it and the config entry with its SHA-256.

  keyd audit verify FILE...
      Check the hash chain of audit files, oldest first (rotated files
      before the current one). Exits 1 naming the first broken line.
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch cmd, rest := args[0], args[1:]; cmd {
	case "serve":
		err = serve(rest, stderr)
	case "keysets", "rotate", "revoke", "sign", "verify", "status", "reload", "revoke-token", "revocations":
		err = clientCommand(cmd, rest, stdin, stdout)
	case "token":
		err = token(rest, stdout)
	case "audit":
		err = auditCmd(rest, stdout)
	case keygenCommand: // the low-priority child keyd serve starts to make RSA keys
		err = keygen.Serve(rest, stdout)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "keyd: unknown command %q\n\n%s", cmd, usage)
		return 2
	}
	if errors.Is(err, flag.ErrHelp) {
		return 2
	}
	if err != nil {
		fmt.Fprintf(stderr, "keyd %s: %v\n", args[0], err)
		return 1
	}
	return 0
}

func serve(args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", "", "config file (default: the embedded default)")
	dataDir := fs.String("data", daemon.DefaultDataDir, "data folder of the embedded default (ignored with --config)")
	listen := fs.String("listen", "", "listen address, overriding the config's (e.g. 127.0.0.1:9090; port 0 picks a free one)")
	logFormat := fs.String("log-format", "text", "log format: text or json")
	logLevel := fs.String("log-level", "info", "log level: debug, info, warn or error")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	levelVar := new(slog.LevelVar)
	levelVar.Set(level)
	hopts := &slog.HandlerOptions{Level: levelVar}
	var handler slog.Handler
	switch *logFormat {
	case "text":
		handler = slog.NewTextHandler(stderr, hopts)
	case "json":
		handler = slog.NewJSONHandler(stderr, hopts)
	default:
		return fmt.Errorf("--log-format: %q is not text or json", *logFormat)
	}
	log := slog.New(handler)
	slog.SetDefault(log)

	var cfg *config.Config
	var err error
	if *configPath != "" {
		cfg, err = config.Load(*configPath)
	} else {
		cfg, err = daemon.PrepareDefault(*dataDir, os.Getenv, log)
	}
	if err != nil {
		return err
	}
	tuneGC()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	o := daemon.Options{Config: cfg, ConfigPath: *configPath, Listen: *listen, Logger: log, LogLevel: levelVar}
	if self, err := os.Executable(); err == nil {
		o.Generator = keygen.Subprocess(self, keygenCommand)
	}
	return daemon.Run(ctx, o)
}

// tuneGC sets the garbage collector for a signing daemon unless GOGC or
// GOMEMLIMIT say otherwise: keyd's live heap is small (tens of MiB for a
// thousand key sets) while every token allocates, so the default GOGC of
// 100 collects far too often; 400 costs a little memory and saves about a
// tenth of the CPU per token (keyd-bench). The soft limit keeps a large
// live heap (many revocations) from growing five-fold before a collection.
func tuneGC() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(400)
	}
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(512 << 20)
	}
}

// keygenCommand is the hidden command of the key generation child.
const keygenCommand = "internal-keygen"

func auditCmd(args []string, stdout io.Writer) error {
	if len(args) < 2 || args[0] != "verify" {
		return errors.New("usage: keyd audit verify FILE [FILE]... (oldest first)")
	}
	res, err := audit.Verify(args[1:]...)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "ok: %d records in %d file(s), chain intact\n", res.Records, res.Files)
	return nil
}

func token(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("token", flag.ContinueOnError)
	name := fs.String("name", "my-service", "token name for the config entry")
	scopes := fs.String("scopes", "sign:default,verify:default", "comma-separated scopes for the config entry")
	if err := fs.Parse(args); err != nil {
		return err
	}
	tok, err := daemon.NewToken()
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "token:  %s\nsha256: %s\n\n# config entry (auth.tokens); give the token to the client, keep only the hash here:\n- {name: %s, sha256: %q, scopes: [%s]}\n",
		tok, daemon.TokenHash(tok), *name, daemon.TokenHash(tok), *scopes)
	return nil
}
