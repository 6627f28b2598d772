package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/keyd-dev/keyd/internal/api"
)

const defaultAddr = "http://127.0.0.1:8080"

// apiClient talks to a running daemon.
type apiClient struct {
	addr  string
	token string
	http  *http.Client
}

// apiError is the daemon's error answer.
type apiError struct {
	Status  int
	Code    string `json:"code"`
	Message string `json:"message"`
	SafeAt  string `json:"safe_at"`
}

func (e *apiError) Error() string {
	msg := fmt.Sprintf("%s (HTTP %d, %s)", e.Message, e.Status, e.Code)
	if e.Status == http.StatusUnauthorized {
		msg += "; set KEYD_TOKEN or --token"
	}
	return msg
}

func (c *apiClient) do(method, path string, body any, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, strings.TrimRight(c.addr, "/")+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("cannot reach keyd at %s: %w (set KEYD_ADDR or --addr)", c.addr, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode >= 300 {
		var wrapped struct {
			Error apiError `json:"error"`
		}
		if json.Unmarshal(data, &wrapped) != nil || wrapped.Error.Code == "" {
			return fmt.Errorf("HTTP %d from %s", resp.StatusCode, c.addr)
		}
		wrapped.Error.Status = resp.StatusCode
		return &wrapped.Error
	}
	if out == nil {
		return nil
	}
	return json.Unmarshal(data, out)
}

func client(cmd string, args []string, stdin io.Reader, stdout io.Writer) error {
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	addr := fs.String("addr", envOr("KEYD_ADDR", defaultAddr), "daemon address (KEYD_ADDR)")
	tok := fs.String("token", os.Getenv("KEYD_TOKEN"), "API token (KEYD_TOKEN)")
	force := fs.Bool("force", false, "rotate: rotate even if the pending key has not been published for jwks_max_age (emergency)")
	ttl := fs.String("ttl", "", "sign: token lifetime, e.g. 5m (default: the key set's token_ttl)")
	reason := fs.String("reason", "", "revoke-token: why (kept in the list and the audit trail)")
	jti := fs.String("jti", "", "revoke-token: the token's jti (with --exp), instead of the token on stdin")
	exp := fs.Int64("exp", 0, "revoke-token: the token's exp, Unix seconds (with --jti)")
	sub := fs.String("sub", "", "revoke-token: revoke every token of this subject issued until now")
	caFile := fs.String("ca-file", os.Getenv("KEYD_CA_FILE"), "PEM CA bundle to trust for an https KEYD_ADDR (KEYD_CA_FILE; default: the system's)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	hc := &http.Client{Timeout: 60 * time.Second}
	if *caFile != "" {
		pem, err := os.ReadFile(*caFile)
		if err != nil {
			return fmt.Errorf("--ca-file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return fmt.Errorf("--ca-file: %s holds no PEM certificate", *caFile)
		}
		hc.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}
	}
	c := &apiClient{addr: *addr, token: strings.TrimSpace(*tok), http: hc}
	want := map[string]int{"keysets": 0, "rotate": 1, "revoke": 2, "sign": 1, "verify": 1, "status": 0, "reload": 0, "revoke-token": 1, "revocations": 1}[cmd]
	if fs.NArg() != want {
		return fmt.Errorf("want %d argument(s), got %d (see keyd help)", want, fs.NArg())
	}
	a := fs.Args()
	switch cmd {
	case "status":
		return status(c, stdout)
	case "reload":
		if err := c.do("POST", "/v1/reload", nil, nil); err != nil {
			return err
		}
		fmt.Fprintln(stdout, "reloaded")
	case "revoke-token":
		body := map[string]any{}
		switch {
		case *sub != "":
			body["sub"] = *sub
		case *jti != "":
			body["jti"], body["exp"] = *jti, *exp
		default:
			raw, err := io.ReadAll(io.LimitReader(stdin, 1<<20))
			if err != nil {
				return err
			}
			body["token"] = strings.TrimSpace(string(raw))
		}
		if *reason != "" {
			body["reason"] = *reason
		}
		var out map[string]any
		if err := c.do("POST", "/v1/keysets/"+url.PathEscape(a[0])+"/revocations", body, &out); err != nil {
			return err
		}
		pretty, _ := json.MarshalIndent(out, "", "  ")
		fmt.Fprintln(stdout, string(pretty))
	case "revocations":
		var out api.RevocationView
		if err := c.do("GET", "/v1/keysets/"+url.PathEscape(a[0])+"/revocations", nil, &out); err != nil {
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
		var out struct {
			KeySets []api.KeySetView `json:"keysets"`
		}
		if err := c.do("GET", "/v1/keysets", nil, &out); err != nil {
			return err
		}
		printKeySets(stdout, out.KeySets...)
	case "rotate":
		var out api.KeySetView
		if err := c.do("POST", "/v1/keysets/"+url.PathEscape(a[0])+"/rotate", map[string]bool{"force": *force}, &out); err != nil {
			var ae *apiError
			if errors.As(err, &ae) && ae.Code == "rotation_too_early" {
				return fmt.Errorf("%w\nrun `keyd rotate --force %s` only in an emergency: verifiers with a cached JWKS will reject the new key's tokens until they refresh", err, a[0])
			}
			return err
		}
		printKeySets(stdout, out)
	case "revoke":
		var out api.KeySetView
		if err := c.do("POST", "/v1/keysets/"+url.PathEscape(a[0])+"/keys/"+url.PathEscape(a[1])+"/revoke", nil, &out); err != nil {
			return err
		}
		printKeySets(stdout, out)
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
		var out struct {
			Token string `json:"token"`
		}
		body := map[string]any{"claims": claims}
		if *ttl != "" {
			body["ttl"] = *ttl
		}
		if err := c.do("POST", "/v1/keysets/"+url.PathEscape(a[0])+"/sign", body, &out); err != nil {
			return err
		}
		fmt.Fprintln(stdout, out.Token)
	case "verify":
		raw, err := io.ReadAll(io.LimitReader(stdin, 1<<20))
		if err != nil {
			return err
		}
		var out map[string]any
		if err := c.do("POST", "/v1/keysets/"+url.PathEscape(a[0])+"/verify", map[string]string{"token": strings.TrimSpace(string(raw))}, &out); err != nil {
			return err
		}
		pretty, _ := json.MarshalIndent(out, "", "  ")
		fmt.Fprintln(stdout, string(pretty))
		if out["valid"] != true {
			return errors.New("token is not valid")
		}
	}
	return nil
}

// status prints what an operator looks at first: readiness and the store,
// then each key set's active key, its age and the next rotation.
func status(c *apiClient, w io.Writer) error {
	var ready map[string]string
	err := c.do("GET", "/readyz", nil, &ready)
	var ae *apiError
	switch {
	case errors.As(err, &ae): // 503 while starting carries no error body of this shape
		return err
	case err != nil && !strings.Contains(err.Error(), "HTTP 503"):
		return err
	case err != nil:
		ready = map[string]string{"status": "starting", "store": "unavailable"}
	}
	fmt.Fprintf(w, "keyd at %s: %s, store %s", c.addr, ready["status"], ready["store"])
	if ready["reason"] != "" {
		fmt.Fprintf(w, " (%s)", ready["reason"])
	}
	fmt.Fprintln(w)
	if ready["status"] == "starting" {
		return nil
	}
	var out struct {
		KeySets []api.KeySetView `json:"keysets"`
	}
	if err := c.do("GET", "/v1/keysets", nil, &out); err != nil {
		return err
	}
	now := time.Now()
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "\nKEYSET\tALG\tACTIVE KID\tACTIVE FOR\tNEXT ROTATION\tKEYS (P/A/R/X)")
	for _, ks := range out.KeySets {
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

func printKeySets(w io.Writer, sets ...api.KeySetView) {
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
