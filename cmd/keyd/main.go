// Command keyd is the key daemon (keyd serve) and its operator CLI (keyd
// keysets, rotate, revoke, sign, verify, token).
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/keyd-dev/keyd/audit"
	"github.com/keyd-dev/keyd/internal/config"
	"github.com/keyd-dev/keyd/internal/daemon"
	"github.com/keyd-dev/keyd/internal/gctune"
	"github.com/keyd-dev/keyd/internal/keygen"
	"github.com/keyd-dev/keyd/internal/version"
	"github.com/keyd-dev/keyd/internal/wait"
)

const usage = `keyd: the key daemon.

Usage:
  keyd serve [flags]
      Run the daemon. Without --config: the embedded default (127.0.0.1:8080,
      bbolt in ./keyd-data, one ES256 key set "default", a generated master
      key and admin token in the data folder).

Client commands, against a running daemon (KEYD_ADDR, default
http://127.0.0.1:8080; the API token in KEYD_TOKEN; KEYD_CA_FILE to trust a
private CA; or --addr, --token, --ca-file, before or after the command):
  keyd status                   readiness, store, each key set's active key and next rotation
  keyd keysets [KEYSET]         list key sets and their keys, or one key set in full
  keyd rotate [--force] KEYSET  rotate now (--force: even if the pending key is too young)
  keyd revoke KEYSET KID        revoke a key at once
  keyd sign [--ttl 5m] KEYSET   sign the claims JSON read from stdin; prints the token
  keyd sign-batch KEYSET        sign one claims object per stdin line; prints one token a line
  keyd token-pair KEYSET        start a login: access + refresh token for the claims on stdin
  keyd refresh KEYSET           spend the refresh token on stdin for a new pair
  keyd verify KEYSET            verify the token read from stdin
  keyd reload                   make the daemon re-read its config file (as SIGHUP)
  keyd revoke-token [--reason R] KEYSET
                                revoke the token read from stdin; or --jti J --exp UNIX;
                                or --sub S: every token and login of that subject until now
  keyd revocations KEYSET       list the revocations in force
  keyd import-key [--file F] [--kid K] [--state retired|pending|active] [--verify-until T] KEYSET
                                import a PEM, JWK, JWKS or (--secret) HMAC secret, keeping its kid

  keyd init [--data DIR] [--out FILE]
      Write a config file serving what the quick start made in DIR (its
      database, master key file and admin token), to move to --config.
  keyd config check FILE
      Check a config file as a start would, without starting: every problem.
  keyd migrate-token-state --config FILE --from-redis URL [--prefix P] [--username U] [--password-file F]
      Bring revocations and refresh logins back from Redis into the key
      store of FILE, before switching storage.token_state back to it (keyd
      stopped). Moving them to Redis needs no command: a start does it.

  keyd backup [--recipient age1...] [--recipients-file F] [--out FILE]
      Save a backup of every key set and all token state from a running keyd
      (admin), encrypted to age recipients. keyd backup inspect FILE shows it.
  keyd restore --config FILE --identity FILE [--replace] BACKUP
      Write a backup into the (empty) stores of FILE, keyd stopped: also how
      a deployment moves between bbolt and Vault.

  keyd master-key new --out FILE [--config F] | wrap --config F --out FILE |
                 id [--key-file F] | rotate --config FILE --new-key-file F
      Make a master key (wrapped, when the config's storage.file.master_key
      says by Vault Transit or PKCS#11), wrap one, print a key's id, or seal
      the bbolt file under a new master key (keyd stopped; crash-safe).

  keyd token [--name N] [--scopes S,S]
      Make a random API token; print it and the config entry with its SHA-256.

  keyd audit verify [--key-file F] [--checkpoint SEQ:HMAC] FILE...
      Check the chain of audit files, oldest first (rotated files before
      the current one). Exits 1 naming the first broken line.

keyd version (or --version) prints the version, commit, Go version and build tags.
keyd COMMAND --help shows a command's arguments and flags.
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	args, err := hoistGlobalFlags(args)
	if err != nil {
		fmt.Fprintf(stderr, "keyd: %v\n\n%s", err, usage)
		return 2
	}
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	cmd, rest := args[0], args[1:]
	switch {
	case cmd == "serve":
		err = serve(rest, stdout, stderr)
	case cmd == "backup" && len(rest) > 0 && rest[0] == "inspect":
		err = backupInspect(rest[1:], stdout, stderr)
	case cmd == "restore":
		err = restoreCmd(rest, stdout, stderr)
	case cmd == "master-key":
		err = masterKeyCmd(rest, stdout, stderr)
	case clientCommands[cmd].flags != nil:
		err = runClient(cmd, rest, cmdIO{stdin: stdin, stdout: stdout, stderr: stderr})
	case cmd == "token":
		err = token(rest, stdout, stderr)
	case cmd == "audit":
		err = auditCmd(rest, stdout, stderr)
	case cmd == "init":
		err = initCmd(rest, stdout, stderr)
	case cmd == "config":
		err = configCmd(rest, stdout, stderr)
	case cmd == "migrate-token-state":
		err = migrateTokenState(rest, stdout, stderr)
	case cmd == keygenCommand: // the low-priority child keyd serve starts to make RSA keys
		err = keygen.Serve(rest, stdout)
	case cmd == "version" || cmd == "--version" || cmd == "-version":
		if len(rest) > 0 {
			if rest[0] == "-h" || rest[0] == "-help" || rest[0] == "--help" {
				fmt.Fprint(stdout, "Usage: keyd version\n\nPrint keyd's version, commit, commit date, Go version and build tags.\n")
				return 0
			}
			fmt.Fprintf(stderr, "keyd version: unexpected arguments %q\n", rest)
			return 2
		}
		fmt.Fprintln(stdout, version.Get())
		return 0
	case cmd == "help" || cmd == "-h" || cmd == "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "keyd: unknown command %q\n\n%s", cmd, usage)
		return 2
	}
	var ue usageError
	if code := exitCode(err); code != 0 {
		if !errors.As(err, &ue) || !ue.printed {
			fmt.Fprintf(stderr, "keyd %s: %v\n", cmd, err)
		}
		return code
	}
	return 0
}

func serve(args []string, stdout, stderr io.Writer) error {
	fs := newCLIFlags("serve", "keyd serve [flags]", serveAbout)
	configPath := fs.String("config", "", "config file (default: the embedded default)")
	dataDir := fs.String("data", daemon.DefaultDataDir, "data folder of the embedded default (ignored with --config)")
	listen := fs.String("listen", "", "listen address, overriding the config's (e.g. 127.0.0.1:9090; port 0 picks a free one)")
	logFormat := fs.String("log-format", "text", "log format: text or json")
	logLevel := fs.String("log-level", "info", "log level: debug, info, warn or error")
	if a, err := fs.parse(args, stdout, stderr); err != nil {
		return err
	} else if len(a) != 0 {
		return usageErrorf("usage: keyd serve [flags]: unexpected arguments %q", a)
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return usageErrorf("usage: --log-level %q: use debug, info, warn or error", *logLevel)
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
		return usageErrorf("usage: --log-format %q: use text or json", *logFormat)
	}
	log := slog.New(handler)
	slog.SetDefault(log)
	v := version.Get()
	log.Info("keyd starting", "version", v.Version, "commit", v.Commit, "go", v.GoVersion, "tags", v.Tags)
	if old := version.OldGo(v.GoVersion); old != "" {
		log.Warn(old)
	}

	var cfg *config.Config
	var err error
	addr := config.DefaultListen
	if *configPath != "" {
		if cfg, err = config.Load(*configPath); err != nil {
			return err
		}
		addr = cfg.Listen
	}
	if *listen != "" {
		addr = *listen
	}
	// Listen first: a port in use fails before anything is made on disk.
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w (pick another with --listen, e.g. --listen 127.0.0.1:9090)", addr, err)
	}
	defer ln.Close()
	if *configPath == "" {
		if cfg, err = daemon.PrepareDefault(*dataDir, os.Getenv, log); err != nil {
			return err
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	o := daemon.Options{Config: cfg, ConfigPath: *configPath, Listener: ln, Logger: log, LogLevel: levelVar, Loaded: tuneGC(ctx)}
	if self, err := os.Executable(); err == nil {
		o.Generator = keygen.Subprocess(self, keygenCommand)
	}
	return daemon.Run(ctx, o)
}

// tuneGC sets the garbage collector for a signing daemon unless GOGC or
// GOMEMLIMIT say otherwise: keyd's live heap is small (tens of MiB for a
// thousand key sets) while every token allocates, so the default GOGC of
// 100 collects far too often; 400 costs a little memory and saves about a
// tenth of the CPU per token (keyd-bench). Once the key sets and
// revocations are loaded, the headroom is kept at gctune.Headroom instead,
// so that a million revocations do not let the heap grow five-fold; the
// soft limit is the backstop. It returns what to do once loaded.
func tuneGC(ctx context.Context) (loaded func()) {
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(512 << 20)
	}
	if os.Getenv("GOGC") != "" {
		return debug.FreeOSMemory
	}
	debug.SetGCPercent(gctune.MaxPercent)
	// Many revocations make the live heap large: from then on the headroom
	// is kept absolute (gctune), not five times the live heap.
	return func() {
		debug.FreeOSMemory() // the start-up's garbage (a million records read) back to the system
		gctune.Adjust()
		go wait.Every(ctx, 30*time.Second, func() { gctune.Adjust() })
	}
}

const serveAbout = `Run the daemon. Without --config: the embedded default (127.0.0.1:8080, bbolt
in ./keyd-data, one ES256 key set "default", a generated master key and admin
token in the data folder).`

// keygenCommand is the hidden command of the key generation child.
const keygenCommand = "internal-keygen"

func auditCmd(args []string, stdout, stderr io.Writer) error {
	fs := newCLIFlags("audit", "keyd audit verify [--key-file F] [--checkpoint SEQ:HMAC] FILE...",
		"Check the chain of audit files, oldest first (rotated files before the current\none). Exits 1 naming the first broken line. With --key-file (audit.key_file)\na keyed trail's HMACs, sequence numbers and checkpoints are checked too;\n--checkpoint takes one that keyd logged (\"audit checkpoint\" seq and hmac), which\nalso shows records removed from the trail's end.")
	keyFile := fs.String("key-file", "", "the trail's audit.key_file")
	cp := fs.String("checkpoint", "", "SEQ:HMAC of a checkpoint from keyd's log")
	a, err := fs.parse(args, stdout, stderr)
	if err != nil {
		return err
	}
	if len(a) < 2 || a[0] != "verify" {
		return usageErrorf("usage: keyd audit verify [--key-file F] [--checkpoint SEQ:HMAC] FILE [FILE]... (oldest first)")
	}
	var o audit.VerifyOptions
	if *keyFile != "" {
		if o.Key, err = audit.ReadKeyFile(*keyFile); err != nil {
			return fmt.Errorf("--key-file: %w", err)
		}
	}
	if *cp != "" {
		seq, mac, ok := strings.Cut(*cp, ":")
		n, err := strconv.ParseUint(seq, 10, 64)
		if !ok || err != nil || n == 0 || len(mac) != 64 {
			return usageErrorf("--checkpoint %q: want SEQ:HMAC as keyd logs them (seq=12 hmac=<64 hex>)", *cp)
		}
		o.CheckpointSeq, o.CheckpointMAC = n, strings.ToLower(mac)
	}
	res, err := audit.VerifyWith(o, a[1:]...)
	if err != nil {
		return err
	}
	if res.Keyed {
		fmt.Fprintf(stdout, "ok: %d records in %d file(s), keyed chain intact, records %d to %d without a gap, %d checkpoints", res.Records, res.Files, res.FirstSeq, res.LastSeq, res.Checkpoints)
		if res.FirstSeq > 1 {
			fmt.Fprintf(stdout, " (records before %d are in older files)", res.FirstSeq)
		}
		fmt.Fprintln(stdout)
		return nil
	}
	fmt.Fprintf(stdout, "ok: %d records in %d file(s), chain intact (unkeyed: anyone able to write the files could have re-chained them; set audit.key_file)\n", res.Records, res.Files)
	return nil
}

func token(args []string, stdout, stderr io.Writer) error {
	fs := newCLIFlags("token", "keyd token [flags]", "Make a random API token; print it and the config entry with its SHA-256.")
	name := fs.String("name", "my-service", "token name for the config entry")
	scopes := fs.String("scopes", "sign:default,verify:default", "comma-separated scopes for the config entry")
	if a, err := fs.parse(args, stdout, stderr); err != nil {
		return err
	} else if len(a) != 0 {
		return usageErrorf("usage: keyd token [flags]: unexpected arguments %q", a)
	}
	tok, err := daemon.NewToken()
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "token:  %s\nsha256: %s\n\n# config entry (auth.tokens); give the token to the client, keep only the hash here:\n- {name: %s, sha256: %q, scopes: [%s]}\n",
		tok, config.TokenHash(tok), *name, config.TokenHash(tok), *scopes)
	return nil
}

func initCmd(args []string, stdout, stderr io.Writer) error {
	fs := newCLIFlags("init", "keyd init [flags]", "Write a config file that serves what the quick start (keyd serve without\n--config) made in its data folder: the same database, master key file and\nadmin token. A new folder is prepared as the quick start would.")
	dataDir := fs.String("data", daemon.DefaultDataDir, "the quick start's data folder")
	out := fs.String("out", "keyd.yaml", "the config file to write (never replaced)")
	listen := fs.String("listen", config.DefaultListen, "the address the config serves on (the quick start's keyd serve --listen, if you gave one)")
	if a, err := fs.parse(args, stdout, stderr); err != nil {
		return err
	} else if len(a) != 0 {
		return usageErrorf("usage: keyd init [--data DIR] [--out FILE] [--listen ADDR]")
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	if err := daemon.InitConfig(*dataDir, *out, *listen, os.Getenv, log); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "wrote %s: run keyd serve --config %s\n", *out, *out)
	return nil
}

func configCmd(args []string, stdout, stderr io.Writer) error {
	fs := newCLIFlags("config", "keyd config check FILE", "Check a config file as keyd serve would, without starting: the YAML, every\nfield, the master key, TLS files, the audit key file. Every problem at once.")
	a, err := fs.parse(args, stdout, stderr)
	if err != nil {
		return err
	}
	if len(a) != 2 || a[0] != "check" {
		return usageErrorf("usage: keyd config check FILE")
	}
	cfg, err := config.Load(a[1])
	if err != nil {
		return err
	}
	if err := daemon.CheckConfig(cfg, os.Getenv); err != nil {
		return fmt.Errorf("config %s:\n%w", a[1], err)
	}
	state := "the key store"
	if cfg.Storage.TokenState.Backend == "redis" {
		state = "redis"
	}
	fmt.Fprintf(stdout, "ok: %s: %d key set(s), backend %s, token state %s, %d API token(s)\n", a[1], len(cfg.KeySets), cfg.Storage.Backend, state, len(cfg.Auth.Tokens))
	for _, line := range daemon.Checked(cfg, os.Getenv) {
		fmt.Fprintln(stdout, "  "+line)
	}
	return nil
}

func migrateTokenState(args []string, stdout, stderr io.Writer) error {
	fs := newCLIFlags("migrate-token-state", "keyd migrate-token-state --config FILE --from-redis URL [flags]",
		"Copy every revocation and refresh login from a Redis token state into the key\nstore of FILE, then let keyd start on the key store's token state again.\nStop keyd first. Idempotent: run it again after a failure.")
	configPath := fs.String("config", "", "keyd's config file (its storage: the key store to copy into)")
	from := fs.String("from-redis", "", "the Redis that holds the token state now: redis://HOST:PORT/DB (rediss:// for TLS)")
	prefix := fs.String("prefix", "keyd:", "the key prefix keyd used on that Redis (storage.token_state.prefix)")
	username := fs.String("username", "", "Redis ACL user")
	passwordFile := fs.String("password-file", "", "file holding the Redis password (owner-only)")
	caFile := fs.String("tls-ca-file", "", "CA bundle for rediss://")
	if a, err := fs.parse(args, stdout, stderr); err != nil {
		return err
	} else if len(a) != 0 || *configPath == "" || *from == "" {
		return usageErrorf("usage: keyd migrate-token-state --config FILE --from-redis URL [--prefix P] [--username U] [--password-file F]")
	}
	cfg, err := config.Load(*configPath)
	if err != nil {
		return err
	}
	if cfg.Storage.TokenState.Backend == "redis" {
		return fmt.Errorf("%s still keeps the token state on Redis (storage.token_state): remove it there, then run this to bring what Redis holds into the key store", *configPath)
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	ts := config.TokenState{Backend: "redis", URL: *from, Username: *username, PasswordFile: *passwordFile, TLSCAFile: *caFile, Prefix: *prefix}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := daemon.MigrateTokenState(ctx, cfg, ts, os.Getenv, log); err != nil {
		return err
	}
	fmt.Fprintln(stdout, "ok: the token state is in the key store; start keyd with storage.token_state on the key store")
	return nil
}
