package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/keyd-dev/keyd/client"
	"golang.org/x/term"
)

// cliFlags is how every keyd command parses its arguments: flags may come
// before, between or after the positional arguments (`keyd rotate default
// --force`), `--` ends the flags, and -h/--help prints the command's own
// usage to stdout (exit 0) while a bad flag prints it to stderr (exit 2).
// No flag's default holds a secret: what comes from the environment is
// read after parsing, so help and usage never print it.
type cliFlags struct {
	*flag.FlagSet
	usage string // "keyd sign [flags] KEYSET"
	about string // what the command does, its arguments and stdin
}

func newCLIFlags(name, usage, about string) *cliFlags {
	f := &cliFlags{FlagSet: flag.NewFlagSet(name, flag.ContinueOnError), usage: usage, about: about}
	f.Usage = func() {
		w := f.Output()
		fmt.Fprintf(w, "Usage: %s\n", f.usage)
		if f.about != "" {
			fmt.Fprintf(w, "\n%s\n", strings.TrimRight(f.about, "\n"))
		}
		has := false
		f.VisitAll(func(*flag.Flag) { has = true })
		if has {
			fmt.Fprintln(w, "\nFlags:")
			// The flag package prints -name; keyd's docs write --name (both
			// parse): help says what the docs say.
			var b strings.Builder
			f.SetOutput(&b)
			f.PrintDefaults()
			f.SetOutput(w)
			fmt.Fprint(w, strings.ReplaceAll("\n"+b.String(), "\n  -", "\n  --")[1:])
		}
	}
	return f
}

// durationFlag is a duration flag whose error says what is wrong with a
// value ("5" has no unit) rather than the flag package's "parse error".
type durationFlag struct{ d *time.Duration }

func (f durationFlag) String() string {
	if f.d == nil || *f.d == 0 {
		return ""
	}
	return f.d.String()
}

func (f durationFlag) Set(s string) error {
	d, err := time.ParseDuration(s)
	if err == nil {
		if d < 0 {
			return fmt.Errorf("%s is negative", s)
		}
		*f.d = d
		return nil
	}
	if _, numErr := strconv.ParseFloat(s, 64); numErr == nil {
		return fmt.Errorf("%s has no unit: use one, e.g. %sm or %ss", s, s, s)
	}
	return fmt.Errorf("%q is not a duration (e.g. 5m, 90s, 1h)", s)
}

// duration defines a duration flag with durationFlag's errors.
func duration(fs *flag.FlagSet, name string, usage string) *time.Duration {
	d := new(time.Duration)
	fs.Var(durationFlag{d}, name, usage)
	return d
}

// parse parses args with flags anywhere and returns the positional
// arguments. A help request returns flag.ErrHelp after printing the usage
// to stdout.
// positionalDash reports whether a, which may start with "-", is an
// argument rather than a flag: no flag of f has its name, and the name has
// what no flag name has (upper case, digits, _), as a kid like
// -eoo3cJ9wpG2e... does. A misspelt flag (--forse) stays an error.
func (f *cliFlags) positionalDash(a string) bool {
	if !strings.HasPrefix(a, "-") || a == "-" || a == "--" {
		return false
	}
	name, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
	if f.Lookup(name) != nil || name == "h" || name == "help" {
		return false
	}
	return strings.ContainsFunc(name, func(r rune) bool { return (r < 'a' || r > 'z') && r != '-' })
}

func (f *cliFlags) parse(args []string, stdout, stderr io.Writer) ([]string, error) {
	f.SetOutput(stderr)
	for _, a := range args {
		if a == "--" {
			break
		}
		if a == "-h" || a == "-help" || a == "--help" {
			f.SetOutput(stdout)
			f.Usage()
			return nil, flag.ErrHelp
		}
	}
	var pos []string
	for {
		if len(args) > 0 && f.positionalDash(args[0]) {
			pos, args = append(pos, args[0]), args[1:]
			continue
		}
		if err := f.Parse(args); err != nil {
			if strings.Contains(err.Error(), "flag provided but not defined") {
				err = fmt.Errorf("%w (an argument starting with - goes after --: keyd revoke KEYSET -- -KID)", err)
			}
			return nil, usageError{err: err, printed: true}
		}
		rest := f.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		// Parse stops at the first non-flag, or after "--" (which it drops).
		if consumed := len(args) - len(rest); consumed > 0 && args[consumed-1] == "--" {
			return append(pos, rest...), nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// globalFlags are the connection flags every client command takes; they may
// also stand before the command (`keyd --ca-file ca.pem status`).
var globalFlags = map[string]bool{"addr": true, "token": true, "ca-file": true}

// hoistGlobalFlags moves connection flags written before the command name to
// after it: `keyd --addr A status` becomes `status --addr A`.
func hoistGlobalFlags(args []string) ([]string, error) {
	var lead []string
	for len(args) > 0 && strings.HasPrefix(args[0], "-") && args[0] != "-" {
		a := args[0]
		if a == "-h" || a == "-help" || a == "--help" || a == "--version" || a == "-version" {
			break
		}
		name, _, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if !globalFlags[name] {
			return nil, fmt.Errorf("%s: only --addr, --token and --ca-file may come before the command", a)
		}
		lead = append(lead, a)
		args = args[1:]
		if !hasValue {
			if len(args) == 0 {
				return nil, fmt.Errorf("%s needs a value", a)
			}
			lead = append(lead, args[0])
			args = args[1:]
		}
	}
	if len(lead) == 0 || len(args) == 0 {
		return append(lead, args...), nil
	}
	return append(append([]string{args[0]}, lead...), args[1:]...), nil
}

// connection are the parsed connection flags of a client command.
type connection struct {
	addr, token, caFile string
}

// register declares the connection flags. Their defaults are empty and
// their usage names the environment variable: the values from the
// environment are filled in by resolve, after parsing, so that no help text
// or usage message ever shows a token.
func (c *connection) register(fs *flag.FlagSet) {
	fs.StringVar(&c.addr, "addr", "", "daemon address (default: $KEYD_ADDR, else "+defaultAddr+")")
	fs.StringVar(&c.token, "token", "", "API token (default: from KEYD_TOKEN; prefer the variable: a flag shows in ps)")
	fs.StringVar(&c.caFile, "ca-file", "", "PEM CA bundle to trust for an https address (default: $KEYD_CA_FILE, else the system's)")
}

func (c *connection) resolve() {
	if c.addr == "" {
		c.addr = envOr("KEYD_ADDR", defaultAddr)
	}
	if c.token == "" {
		c.token = os.Getenv("KEYD_TOKEN")
	}
	if c.caFile == "" {
		c.caFile = os.Getenv("KEYD_CA_FILE")
	}
}

// exitCode maps a command's error to keyd's exit status: help is 0, a
// usage error 2, any other failure 1.
func exitCode(err error) int {
	var ue usageError
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, &ue):
		return 2
	}
	return 1
}

// usageError is a command line that cannot be run as written; printed
// says the flag package has shown it with the usage already.
type usageError struct {
	err     error
	printed bool
}

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usageErrorf(format string, a ...any) error { return usageError{err: fmt.Errorf(format, a...)} }

// readInput reads stdin whole (1 MiB at most). On a terminal it first says
// what it is waiting for, so that `keyd sign default` does not look hung.
func readInput(o cmdIO, what string) ([]byte, error) {
	if f, ok := o.stdin.(*os.File); ok && term.IsTerminal(int(f.Fd())) { // a terminal, not /dev/null
		fmt.Fprintf(o.stderr, "keyd: reading %s from stdin (end with Ctrl-D)\n", what)
	}
	raw, err := io.ReadAll(io.LimitReader(o.stdin, 1<<20+1))
	if err != nil {
		return nil, err
	}
	if len(raw) > 1<<20 {
		return nil, fmt.Errorf("stdin holds more than 1 MiB of %s", what)
	}
	return raw, nil
}

// statusJSON prints readiness and the key sets as one JSON object, for
// scripts (keyd status --json).
func statusJSON(ctx context.Context, c *client.Client, w io.Writer) error {
	ready, err := c.Ready(ctx)
	if err != nil {
		return err
	}
	out := struct {
		Ready   *client.Readiness `json:"ready"`
		KeySets []client.KeySet   `json:"keysets"`
	}{Ready: ready, KeySets: []client.KeySet{}}
	if ready.Status != "starting" {
		if out.KeySets, err = c.KeySets(ctx); err != nil {
			return err
		}
	}
	printJSON(w, out)
	return nil
}

// readKeyInput reads a key from path, or stdin when path is empty.
func readKeyInput(o cmdIO, path string) ([]byte, error) {
	if path == "" {
		return readInput(o, "the key")
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if len(raw) > 1<<20 {
		return nil, fmt.Errorf("%s is over 1 MiB", path)
	}
	return raw, nil
}
