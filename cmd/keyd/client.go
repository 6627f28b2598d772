package main

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/keyd-dev/keyd/client"
)

const defaultAddr = "http://127.0.0.1:8080"

// clientCommand describes one client command: its usage line, what it
// does, its own flags and how it runs against a client.
type clientCommand struct {
	args  string // positional arguments, as the usage line shows them
	nargs []int  // accepted counts of positional arguments
	about string
	flags func(fs *flag.FlagSet) func(ctx context.Context, c *client.Client, a []string, io cmdIO) error
}

// cmdIO is where a command reads and writes.
type cmdIO struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	addr           string
}

var clientCommands = map[string]clientCommand{
	"status": {about: "Readiness, the store, each key set's active key and next rotation (admin).",
		flags: func(fs *flag.FlagSet) func(context.Context, *client.Client, []string, cmdIO) error {
			asJSON := fs.Bool("json", false, "print readiness and the key sets as JSON")
			return func(ctx context.Context, c *client.Client, _ []string, o cmdIO) error {
				if *asJSON {
					return statusJSON(ctx, c, o.stdout)
				}
				return status(ctx, c, o.addr, o.stdout)
			}
		}},
	"reload": {about: "Make the daemon re-read its config file, as SIGHUP does (admin).",
		flags: func(*flag.FlagSet) func(context.Context, *client.Client, []string, cmdIO) error {
			return func(ctx context.Context, c *client.Client, _ []string, o cmdIO) error {
				if err := c.Reload(ctx); err != nil {
					return err
				}
				fmt.Fprintln(o.stdout, "reloaded")
				return nil
			}
		}},
	"keysets": {args: "[KEYSET]", nargs: []int{0, 1},
		about: "List the key sets and their keys; with KEYSET, that key set alone with its\nsettings and next rotation (admin).",
		flags: func(fs *flag.FlagSet) func(context.Context, *client.Client, []string, cmdIO) error {
			asJSON := fs.Bool("json", false, "print the key sets as JSON (as GET /v1/keysets answers)")
			return func(ctx context.Context, c *client.Client, a []string, o cmdIO) error {
				if len(a) == 1 {
					ks, err := c.KeySet(ctx, a[0])
					if err == nil && *asJSON {
						printJSON(o.stdout, ks)
					} else if err == nil {
						printKeySet(o.stdout, *ks)
					}
					return err
				}
				sets, err := c.KeySets(ctx)
				if err == nil && *asJSON {
					printJSON(o.stdout, sets)
				} else if err == nil {
					printKeySets(o.stdout, sets...)
				}
				return err
			}
		}},
	"rotate": {args: "KEYSET", nargs: []int{1},
		about: "Rotate KEYSET now: its pending key signs, a new pending key is made (admin).",
		flags: func(fs *flag.FlagSet) func(context.Context, *client.Client, []string, cmdIO) error {
			force := fs.Bool("force", false, "rotate even if the pending key has not been published for jwks_max_age (emergency)")
			return func(ctx context.Context, c *client.Client, a []string, o cmdIO) error {
				ks, err := c.Rotate(ctx, a[0], *force)
				if errors.Is(err, client.ErrRotationTooEarly) {
					return fmt.Errorf("%w\nrun `keyd rotate --force %s` only in an emergency: verifiers with a cached JWKS will reject the new key's tokens until they refresh", err, a[0])
				}
				if err != nil {
					return err
				}
				printKeySets(o.stdout, *ks)
				return nil
			}
		}},
	"revoke": {args: "KEYSET KID", nargs: []int{2},
		about: "Revoke the key KID of KEYSET at once: its tokens stop verifying (admin).",
		flags: func(*flag.FlagSet) func(context.Context, *client.Client, []string, cmdIO) error {
			return func(ctx context.Context, c *client.Client, a []string, o cmdIO) error {
				ks, err := c.RevokeKey(ctx, a[0], a[1])
				if err != nil {
					return err
				}
				printKeySets(o.stdout, *ks)
				return nil
			}
		}},
	"sign": {args: "KEYSET", nargs: []int{1},
		about: "Sign the claims read from stdin (a JSON object) with KEYSET's active key and\nprint the token.\n\n  echo '{\"sub\": \"alice\"}' | keyd sign default",
		flags: func(fs *flag.FlagSet) func(context.Context, *client.Client, []string, cmdIO) error {
			ttl := duration(fs, "ttl", "token lifetime as a `duration`, e.g. 5m (default: the key set's token_ttl)")
			return func(ctx context.Context, c *client.Client, a []string, o cmdIO) error {
				claims, err := readClaims(o, "claims")
				if err != nil {
					return err
				}
				t, err := c.Sign(ctx, a[0], claims, *ttl)
				if err != nil {
					return err
				}
				fmt.Fprintln(o.stdout, t.Token)
				return nil
			}
		}},
	"sign-batch": {args: "KEYSET", nargs: []int{1},
		about: "Sign many tokens in one call: stdin holds one JSON claims object per line\n(at most 1,000). Prints one line per item, in order: the token, or\n\"error CODE: message\" for an item that was refused.",
		flags: func(fs *flag.FlagSet) func(context.Context, *client.Client, []string, cmdIO) error {
			ttl := duration(fs, "ttl", "lifetime of every token as a `duration`, e.g. 5m (default: the key set's token_ttl)")
			return func(ctx context.Context, c *client.Client, a []string, o cmdIO) error {
				raw, err := readInput(o, "claims, one JSON object per line")
				if err != nil {
					return err
				}
				var items []client.SignItem
				for i, line := range strings.Split(string(raw), "\n") {
					if line = strings.TrimSpace(line); line == "" {
						continue
					}
					if err := claimsObject([]byte(line)); err != nil {
						return fmt.Errorf("line %d: %w", i+1, err)
					}
					items = append(items, client.SignItem{Claims: json.RawMessage(line), TTL: *ttl})
				}
				if len(items) == 0 {
					return errors.New("no claims on stdin: give one JSON object per line")
				}
				res, err := c.SignBatch(ctx, a[0], items)
				if err != nil {
					return err
				}
				failed := 0
				for _, r := range res {
					if r.Error != nil {
						failed++
						fmt.Fprintf(o.stdout, "error %s: %s\n", r.Error.Code, r.Error.Message)
					} else if r.Token != nil {
						fmt.Fprintln(o.stdout, r.Token.Token)
					}
				}
				if failed > 0 {
					return fmt.Errorf("%d of %d items refused", failed, len(res))
				}
				return nil
			}
		}},
	"token-pair": {args: "KEYSET", nargs: []int{1},
		about: "Start a login: sign the claims read from stdin (a JSON object) as an access\ntoken and make its refresh token. Prints the pair as JSON. Needs the key\nset's refresh.ttl.",
		flags: func(*flag.FlagSet) func(context.Context, *client.Client, []string, cmdIO) error {
			return func(ctx context.Context, c *client.Client, a []string, o cmdIO) error {
				claims, err := readClaims(o, "claims")
				if err != nil {
					return err
				}
				p, err := c.TokenPair(ctx, a[0], claims)
				if err != nil {
					return err
				}
				printJSON(o.stdout, p)
				return nil
			}
		}},
	"refresh": {args: "KEYSET", nargs: []int{1},
		about: "Spend the refresh token read from stdin for a new pair, printed as JSON\n(the old refresh token is then spent: using it again ends the login).",
		flags: func(*flag.FlagSet) func(context.Context, *client.Client, []string, cmdIO) error {
			return func(ctx context.Context, c *client.Client, a []string, o cmdIO) error {
				tok, err := readToken(o, "refresh token")
				if err != nil {
					return err
				}
				p, err := c.Refresh(ctx, a[0], tok)
				if err != nil {
					return err
				}
				printJSON(o.stdout, p)
				return nil
			}
		}},
	"verify": {args: "KEYSET", nargs: []int{1},
		about: "Verify the token read from stdin against KEYSET (and what the flags require\nbeyond the key set's verify policy); prints the answer as JSON and exits 1 if\nthe token is not valid.",
		flags: func(fs *flag.FlagSet) func(context.Context, *client.Client, []string, cmdIO) error {
			var audience, required listFlag
			fs.Var(&audience, "audience", "an aud the token must hold one of; repeat for several")
			issuer := fs.String("issuer", "", "the iss the token must have")
			subject := fs.String("subject", "", "the sub the token must have")
			typ := fs.String("typ", "", "the typ header the token must have")
			fs.Var(&required, "require", "a claim the token must carry; repeat for several")
			return func(ctx context.Context, c *client.Client, a []string, o cmdIO) error {
				tok, err := readToken(o, "token")
				if err != nil {
					return err
				}
				v, err := c.Verify(ctx, a[0], tok, client.VerifyOptions{Audience: audience, Issuer: *issuer, Subject: *subject, Typ: *typ, RequiredClaims: required})
				if err != nil {
					return err
				}
				printJSON(o.stdout, v)
				if !v.Valid {
					return errors.New("token is not valid")
				}
				return nil
			}
		}},
	"revoke-token": {args: "KEYSET", nargs: []int{1},
		about: "Revoke the token read from stdin; or --jti J --exp UNIX; or --sub S: every\ntoken of that subject issued until now, and every refresh login of it; or\n--login: the login of the refresh token read from stdin; or --from FILE (- for\nstdin): a denylist, one JSON object a line, {\"jti\",\"exp\"} or {\"sub\",\"before\"} (admin).",
		flags: func(fs *flag.FlagSet) func(context.Context, *client.Client, []string, cmdIO) error {
			reason := fs.String("reason", "", "why (kept in the list and the audit trail)")
			jti := fs.String("jti", "", "the token's jti (with --exp), instead of the token on stdin")
			exp := fs.Int64("exp", 0, "the token's exp, Unix seconds (with --jti)")
			sub := fs.String("sub", "", "revoke every token of this subject issued until now, and every login of it")
			login := fs.Bool("login", false, "stdin holds a refresh token: end that login (its refresh tokens stop working)")
			from := fs.String("from", "", "import a denylist from this file (- for stdin): one JSON object a line")
			return func(ctx context.Context, c *client.Client, a []string, o cmdIO) error {
				if *from != "" {
					return importRevocations(ctx, c, a[0], *from, o)
				}
				r := client.Revocation{Sub: *sub, Reason: *reason}
				if *login {
					tok, err := readToken(o, "refresh token")
					if err != nil {
						return err
					}
					r.RefreshToken = tok
				} else if *sub == "" && *jti != "" {
					r.JTI, r.Exp = *jti, *exp
				} else if *sub == "" {
					tok, err := readToken(o, "token")
					if err != nil {
						return err
					}
					r.Token = tok
				}
				out, err := c.RevokeTokens(ctx, a[0], r)
				if err != nil {
					return err
				}
				printJSON(o.stdout, out)
				return nil
			}
		}},
	"import-key": {args: "KEYSET", nargs: []int{1},
		about: "Import a key made outside keyd into KEYSET, keeping its kid (admin). The key is\nread from --file or stdin, never from the command line: a PEM (PKCS #1, PKCS #8,\nSEC 1 private key, PKIX public key), a JWK, a JWKS (another issuer's public\nkeys), or with --secret an HMAC secret (the file's bytes, one trailing newline\ndropped; --base64 if the file holds it in base64).\n\n  keyd import-key app --file sa.pub --kid old-sa --verify-until 2026-12-31T00:00:00Z\n  printf %s \"$SECRET_KEY\" | keyd import-key legacy --secret --verify-until 720h",
		flags: func(fs *flag.FlagSet) func(context.Context, *client.Client, []string, cmdIO) error {
			file := fs.String("file", "", "read the key from this file (default: stdin)")
			kid := fs.String("kid", "", "the kid tokens in flight carry (default: a JWK's own, else keyd's thumbprint)")
			state := fs.String("state", "retired", "retired (verify-only), pending (signs after the next rotation) or active (signs now; needs --force)")
			until := fs.String("verify-until", "", "retired keys: stop verifying at this RFC 3339 time, or after this duration (e.g. 720h)")
			secret := fs.Bool("secret", false, "the input is an HMAC secret")
			b64 := fs.Bool("base64", false, "with --secret: the input is base64")
			force := fs.Bool("force", false, "with --state active: sign at once although verifiers' cached JWKS lack the key")
			return func(ctx context.Context, c *client.Client, a []string, o cmdIO) error {
				raw, err := readKeyInput(o, *file)
				if err != nil {
					return err
				}
				in := client.Import{KID: *kid, State: *state, Force: *force}
				if *until != "" {
					t, err := parseUntil(*until, time.Now())
					if err != nil {
						return usageErrorf("--verify-until %q: %v", *until, err)
					}
					in.VerifyUntil = t
				}
				trimmed := bytes.TrimSpace(raw)
				switch {
				case len(trimmed) == 0:
					return usageErrorf("nothing to import: pipe the PEM, JWK or JWKS (or, with --secret, the secret) to stdin, or give --file")
				case *secret && *b64:
					in.SecretBase64 = string(trimmed)
				case *secret:
					in.Secret = string(bytes.TrimSuffix(bytes.TrimSuffix(raw, []byte("\n")), []byte("\r")))
				case bytes.HasPrefix(trimmed, []byte("-----BEGIN")):
					in.PEM = string(trimmed)
				case bytes.HasPrefix(trimmed, []byte("{")):
					var probe struct {
						Keys json.RawMessage `json:"keys"`
					}
					if json.Unmarshal(trimmed, &probe) != nil {
						return errors.New("the input starts with { but is not JSON (a JWK or a JWKS)")
					}
					if probe.Keys != nil {
						in.JWKS = trimmed
					} else {
						in.JWK = trimmed
					}
				default:
					return errors.New("the input is neither a PEM nor a JWK/JWKS; for an HMAC secret give --secret")
				}
				res, err := c.ImportKey(ctx, a[0], in)
				if err != nil {
					return err
				}
				for _, w := range res.Warnings {
					fmt.Fprintln(o.stderr, "warning:", w)
				}
				fmt.Fprintf(o.stderr, "imported %s into %s as %s\n", cmp.Or(*kid, "the key"), a[0], *state)
				printKeySets(o.stdout, res.KeySet)
				return nil
			}
		}},
	"revocations": {args: "KEYSET", nargs: []int{1},
		about: "List the token revocations in force for KEYSET (admin).",
		flags: func(*flag.FlagSet) func(context.Context, *client.Client, []string, cmdIO) error {
			return func(ctx context.Context, c *client.Client, a []string, o cmdIO) error {
				out, err := c.Revocations(ctx, a[0])
				if err != nil {
					return err
				}
				tw := tabwriter.NewWriter(o.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "KIND\tJTI / SUBJECT\tCOVERS\tDROPPED AFTER\tREVOKED AT\tREASON")
				for _, t := range out.Tokens {
					fmt.Fprintf(tw, "token\t%s\tthe token\t%s\t%s\t%s\n", t.JTI, stamp(t.Exp), stamp(t.RevokedAt), t.Reason)
				}
				for _, s := range out.Subjects {
					fmt.Fprintf(tw, "subject\t%s\tissued until %s\t%s\t%s\t%s\n", s.Sub, stamp(s.IssuedBefore), stamp(s.Until), stamp(s.RevokedAt), s.Reason)
				}
				if err := tw.Flush(); err != nil {
					return err
				}
				if out.Truncated {
					fmt.Fprintf(o.stdout, "(the newest shown; %d in force)\n", out.InForce)
				}
				return nil
			}
		}},
}

// runClient runs the client command cmd: its flags and the connection
// flags, anywhere on the line.
func runClient(cmd string, args []string, o cmdIO) error {
	spec := clientCommands[cmd]
	usage := "keyd " + cmd + " [flags]"
	if spec.args != "" {
		usage += " " + spec.args
	}
	about := spec.about + "\n\nConnects to KEYD_ADDR (default " + defaultAddr + ") with the token in KEYD_TOKEN;\nKEYD_CA_FILE names a CA bundle for https."
	fs := newCLIFlags(cmd, usage, about)
	run := spec.flags(fs.FlagSet)
	var conn connection
	conn.register(fs.FlagSet)
	a, err := fs.parse(args, o.stdout, o.stderr)
	if err != nil {
		return err
	}
	nargs := spec.nargs
	if nargs == nil {
		nargs = []int{0}
	}
	if !slices.Contains(nargs, len(a)) {
		return usageErrorf("usage: %s (got %d argument(s); keyd %s --help)", usage, len(a), cmd)
	}
	conn.resolve()
	o.addr = conn.addr
	opts := []client.Option{client.WithToken(conn.token), client.WithTimeout(60 * time.Second),
		client.WithRetryNotice(func(attempt int, wait time.Duration, err error) {
			fmt.Fprintf(o.stderr, "keyd: %v; retrying in %v (%d of 3)\n", err, wait.Round(time.Millisecond), attempt)
		})}
	if conn.caFile != "" {
		opts = append(opts, client.WithCAFile(conn.caFile))
	}
	c, err := client.New(conn.addr, opts...)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM) // Ctrl-C cancels the request and its retries
	defer stop()
	err = run(ctx, c, a, o)
	switch {
	case errors.Is(err, client.ErrUnauthorized):
		return fmt.Errorf("%w; set KEYD_TOKEN (or --token)", err)
	case err == nil:
		return nil
	case strings.Contains(err.Error(), "server gave HTTP response to HTTPS client"):
		return fmt.Errorf("%w\nkeyd answers plain HTTP there: use http:// in KEYD_ADDR", err)
	case strings.Contains(err.Error(), "malformed HTTP response") || strings.Contains(err.Error(), "HTTP/1.x transport connection broken"):
		return fmt.Errorf("%w\nkeyd answers HTTPS there: use https:// in KEYD_ADDR (and KEYD_CA_FILE for a private CA)", err)
	case strings.Contains(err.Error(), "certificate signed by unknown authority"):
		return fmt.Errorf("%w\nset KEYD_CA_FILE (or --ca-file) to the CA bundle that signed keyd's certificate", err)
	case errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Errorf("%w\nis keyd running there? KEYD_ADDR (or --addr) says where it listens (default %s)", err, defaultAddr)
	}
	return err
}

// readClaims reads one JSON object of claims from stdin; nothing at all is
// refused rather than signed as {}.
func readClaims(o cmdIO, what string) (json.RawMessage, error) {
	raw, err := readInput(o, what+" (a JSON object)")
	if err != nil {
		return nil, err
	}
	s := bytes.TrimSpace(raw)
	if len(s) == 0 {
		return nil, errors.New(`no claims on stdin: pipe a JSON object, e.g. echo '{"sub": "alice"}' | keyd sign default`)
	}
	if err := claimsObject(s); err != nil {
		return nil, err
	}
	return s, nil
}

// claimsObject says in words what is wrong with claims that are not one
// JSON object.
func claimsObject(s []byte) error {
	if !json.Valid(s) {
		return errors.New("stdin is not valid JSON: claims are a JSON object, e.g. {\"sub\": \"alice\"}")
	}
	if s[0] != '{' {
		return errors.New("the claims must be a JSON object ({...}), not an array, string or number")
	}
	return nil
}

// readToken reads one token from stdin.
func readToken(o cmdIO, what string) (string, error) {
	raw, err := readInput(o, "the "+what)
	if err != nil {
		return "", err
	}
	tok := strings.TrimSpace(string(raw))
	if tok == "" {
		return "", fmt.Errorf("no %s on stdin", what)
	}
	return tok, nil
}

func printJSON(w io.Writer, v any) {
	pretty, _ := json.MarshalIndent(v, "", "  ")
	fmt.Fprintln(w, string(pretty))
}

// status prints what an operator looks at first: readiness and the store,
// then each key set's active key, its age and the next rotation.
func status(ctx context.Context, c *client.Client, addr string, w io.Writer) error {
	ready, err := c.Ready(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "keyd at %s: %s, store %s", addr, ready.Status, ready.Store)
	if ready.Reason != "" {
		fmt.Fprintf(w, " (%s)", ready.Reason)
	}
	if ready.Detail != "" {
		fmt.Fprintf(w, "\n  store error: %s", ready.Detail)
	}
	if ready.Backup != "" {
		fmt.Fprintf(w, "\n  scheduled backups %s, last written %s", ready.Backup, ready.LastBackup)
		if ready.BackupDetail != "" {
			fmt.Fprintf(w, "; last attempt: %s", ready.BackupDetail)
		}
	}
	fmt.Fprintln(w)
	if ready.Status == "starting" {
		return nil
	}
	sets, err := c.KeySets(ctx)
	if err != nil {
		return err
	}
	now := time.Now()
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "\nKEYSET\tALG\tACTIVE KID\tACTIVE FOR\tNEXT ROTATION\tKEYS (P/A/R/X)")
	for _, ks := range sets {
		counts := map[string]int{}
		active, age := "-", "-"
		for _, k := range ks.Keys {
			counts[k.State]++
			if k.State == "active" {
				active, age = k.KID, now.Sub(k.ActivatedAt).Round(time.Second).String()
			}
		}
		next := stamp(ks.NextRotation)
		if !ks.NextRotation.IsZero() {
			next += " (in " + ks.NextRotation.Sub(now).Round(time.Second).String() + ")"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d/%d/%d/%d\n", ks.Name, ks.Algorithm, active, age, next,
			counts["pending"], counts["active"], counts["retired"], counts["revoked"])
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, ks := range sets {
		if l := ks.Legacy; l != nil {
			fmt.Fprintf(w, "%s: tokens without a kid verify with %s until %s; last one verified: %s\n", ks.Name, l.KID, stamp(l.Until), stamp(l.LastVerified))
		}
		if ks.RotationWaitsFor != "" {
			fmt.Fprintf(w, "%s: the due rotation waits for %s\n", ks.Name, ks.RotationWaitsFor)
		}
	}
	return nil
}

// printKeySet shows one key set: its settings, next rotation and keys.
func printKeySet(w io.Writer, ks client.KeySet) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	next := stamp(ks.NextRotation)
	if !ks.NextRotation.IsZero() {
		next += " (in " + time.Until(ks.NextRotation).Round(time.Second).String() + ")"
	}
	for _, kv := range [][2]string{
		{"key set", ks.Name}, {"algorithm", ks.Algorithm}, {"rotation", ks.Rotation}, {"next rotation", next}, {"rotation waits for", cmp.Or(ks.RotationWaitsFor, "-")},
		{"last rotated", stamp(ks.RotatedAt)}, {"token ttl", ks.TokenTTL}, {"jwks max age", ks.JWKSMaxAge},
		{"leeway", ks.Leeway}, {"issuer", cmp.Or(ks.Issuer, "-")},
	} {
		fmt.Fprintf(tw, "%s:\t%s\n", kv[0], kv[1])
	}
	if l := ks.Legacy; l != nil {
		fmt.Fprintf(tw, "legacy:\ttokens without a kid verify with %s until %s%s; last one verified: %s\n", l.KID, stamp(l.Until),
			map[bool]string{true: " (even without exp)"}[l.AllowMissingExp], cmp.Or(stamp(l.LastVerified), "-"))
	}
	var certs []string
	for _, k := range ks.Keys {
		if !k.CertificateExpiresAt.IsZero() {
			certs = append(certs, k.KID+" until "+stamp(k.CertificateExpiresAt))
		}
	}
	if len(certs) > 0 {
		fmt.Fprintf(tw, "certificates:	%s (renewed two thirds of the way through)\n", strings.Join(certs, ", "))
	}
	_ = tw.Flush()
	fmt.Fprintln(w)
	printKeySets(w, ks)
}

func printKeySets(w io.Writer, sets ...client.KeySet) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "KEYSET\tALG\tKID\tSTATE\tCREATED\tACTIVATED\tRETIRED/REVOKED\tDESTROY AT")
	for _, ks := range sets {
		for _, k := range ks.Keys {
			ended := k.RetiredAt
			if !k.RevokedAt.IsZero() {
				ended = k.RevokedAt
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", ks.Name, k.Alg, k.KID, k.State,
				stamp(k.CreatedAt), stamp(k.ActivatedAt), stamp(ended), stamp(k.DestroyAt))
		}
	}
	_ = tw.Flush()
}

func stamp(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// parseUntil reads an RFC 3339 time, or a duration from now.
func parseUntil(s string, now time.Time) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return time.Time{}, errors.New("want an RFC 3339 time (2026-12-31T00:00:00Z) or a positive duration (720h)")
	}
	return now.Add(d), nil
}
