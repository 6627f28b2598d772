package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/keyd-dev/keyd/client"
)

const defaultAddr = "http://127.0.0.1:8080"

// clientCommand runs one of the client commands through the client
// package.
func clientCommand(cmd string, args []string, stdin io.Reader, stdout io.Writer) error {
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	addr := fs.String("addr", envOr("KEYD_ADDR", defaultAddr), "daemon address (KEYD_ADDR)")
	tok := fs.String("token", os.Getenv("KEYD_TOKEN"), "API token (KEYD_TOKEN)")
	force := fs.Bool("force", false, "rotate: rotate even if the pending key has not been published for jwks_max_age (emergency)")
	ttl := fs.Duration("ttl", 0, "sign: token lifetime, e.g. 5m (default: the key set's token_ttl)")
	reason := fs.String("reason", "", "revoke-token: why (kept in the list and the audit trail)")
	jti := fs.String("jti", "", "revoke-token: the token's jti (with --exp), instead of the token on stdin")
	exp := fs.Int64("exp", 0, "revoke-token: the token's exp, Unix seconds (with --jti)")
	sub := fs.String("sub", "", "revoke-token: revoke every token of this subject issued until now")
	caFile := fs.String("ca-file", os.Getenv("KEYD_CA_FILE"), "PEM CA bundle to trust for an https KEYD_ADDR (KEYD_CA_FILE; default: the system's)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	opts := []client.Option{client.WithToken(*tok), client.WithTimeout(60 * time.Second)}
	if *caFile != "" {
		opts = append(opts, client.WithCAFile(*caFile))
	}
	c, err := client.New(*addr, opts...)
	if err != nil {
		return err
	}
	want := map[string]int{"keysets": 0, "rotate": 1, "revoke": 2, "sign": 1, "verify": 1, "status": 0, "reload": 0, "revoke-token": 1, "revocations": 1}[cmd]
	if fs.NArg() != want {
		return fmt.Errorf("want %d argument(s), got %d (see keyd help)", want, fs.NArg())
	}
	a := fs.Args()
	ctx := context.Background()
	err = func() error {
		switch cmd {
		case "status":
			return status(ctx, c, *addr, stdout)
		case "reload":
			if err := c.Reload(ctx); err != nil {
				return err
			}
			fmt.Fprintln(stdout, "reloaded")
		case "revoke-token":
			r := client.Revocation{Sub: *sub, Reason: *reason}
			if *sub == "" && *jti != "" {
				r.JTI, r.Exp = *jti, *exp
			} else if *sub == "" {
				raw, err := io.ReadAll(io.LimitReader(stdin, 1<<20))
				if err != nil {
					return err
				}
				r.Token = strings.TrimSpace(string(raw))
			}
			out, err := c.RevokeTokens(ctx, a[0], r)
			if err != nil {
				return err
			}
			printJSON(stdout, out)
		case "revocations":
			out, err := c.Revocations(ctx, a[0])
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "KIND\tJTI / SUBJECT\tCOVERS\tDROPPED AFTER\tREVOKED AT\tREASON")
			for _, t := range out.Tokens {
				fmt.Fprintf(tw, "token\t%s\tthe token\t%s\t%s\t%s\n", t.JTI, stamp(t.Exp), stamp(t.RevokedAt), t.Reason)
			}
			for _, s := range out.Subjects {
				fmt.Fprintf(tw, "subject\t%s\tissued until %s\t%s\t%s\t%s\n", s.Sub, stamp(s.IssuedBefore), stamp(s.Until), stamp(s.RevokedAt), s.Reason)
			}
			_ = tw.Flush()
		case "keysets":
			sets, err := c.KeySets(ctx)
			if err != nil {
				return err
			}
			printKeySets(stdout, sets...)
		case "rotate":
			ks, err := c.Rotate(ctx, a[0], *force)
			if errors.Is(err, client.ErrRotationTooEarly) {
				return fmt.Errorf("%w\nrun `keyd rotate --force %s` only in an emergency: verifiers with a cached JWKS will reject the new key's tokens until they refresh", err, a[0])
			}
			if err != nil {
				return err
			}
			printKeySets(stdout, *ks)
		case "revoke":
			ks, err := c.RevokeKey(ctx, a[0], a[1])
			if err != nil {
				return err
			}
			printKeySets(stdout, *ks)
		case "sign":
			raw, err := io.ReadAll(io.LimitReader(stdin, 1<<20))
			if err != nil {
				return err
			}
			claims := json.RawMessage(`{}`)
			if s := bytes.TrimSpace(raw); len(s) > 0 {
				if !json.Valid(s) {
					return errors.New("stdin is not valid JSON claims")
				}
				claims = s
			}
			t, err := c.Sign(ctx, a[0], claims, *ttl)
			if err != nil {
				return err
			}
			fmt.Fprintln(stdout, t.Token)
		case "verify":
			raw, err := io.ReadAll(io.LimitReader(stdin, 1<<20))
			if err != nil {
				return err
			}
			v, err := c.Verify(ctx, a[0], strings.TrimSpace(string(raw)), client.VerifyOptions{})
			if err != nil {
				return err
			}
			printJSON(stdout, v)
			if !v.Valid {
				return errors.New("token is not valid")
			}
		}
		return nil
	}()
	if errors.Is(err, client.ErrUnauthorized) {
		return fmt.Errorf("%w; set KEYD_TOKEN or --token", err)
	}
	return err
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
	return tw.Flush()
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
