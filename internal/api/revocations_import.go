package api

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"time"

	"github.com/keyd-dev/keyd/rotation"
	"github.com/keyd-dev/keyd/tokenstate"
)

// MaxImportBytes bounds a revocation import's body: a million lines of a
// jti and an exp take about 60 MB.
const MaxImportBytes = 512 << 20

// ImportTimeout bounds one import's request.
const ImportTimeout = 15 * time.Minute

// importBatch is how many lines are written at once (and the memory an
// import holds, whatever its size).
const importBatch = 10_000

// maxImportErrors bounds the refused lines an answer names.
const maxImportErrors = 100

// importLine is one line of a revocation import: a token by its jti and
// exp, or every token of a subject issued at or before before (default:
// now), each with an optional reason.
type importLine struct {
	JTI    string      `json:"jti"`
	Exp    json.Number `json:"exp"`
	Sub    string      `json:"sub"`
	Before json.Number `json:"before"`
	Reason string      `json:"reason"`
}

// ImportResult is the answer of a revocation import.
type ImportResult struct {
	Imported int           `json:"imported"` // revocations written (merged with any in force)
	Expired  int           `json:"expired"`  // lines whose token has expired already: nothing to revoke
	Refused  int           `json:"refused"`  // lines that do not parse or break a rule, each skipped
	Errors   []ImportError `json:"errors"`   // the first refused lines, with why
	InForce  int           `json:"in_force"`
}

// ImportError names a refused line.
type ImportError struct {
	Line  int    `json:"line"`
	Error string `json:"error"`
}

// importRevocations reads a denylist, one JSON object a line ({"jti",
// "exp"} or {"sub", "before"}), and revokes each entry as the revocations
// endpoint would, in batches: a line that breaks a rule is skipped and
// named in the answer (with its line number), the others are written.
// Running it again is harmless (entries merge).
func (s *server) importRevocations(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	ks, p, err := s.Manager.KeySet(name)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	// A million lines outlast the server's read and write timeouts, which
	// are for ordinary requests: this one may take ImportTimeout.
	rc := http.NewResponseController(w)
	_ = rc.SetReadDeadline(time.Now().Add(ImportTimeout))
	_ = rc.SetWriteDeadline(time.Now().Add(ImportTimeout))
	ctx := rotation.WithActor(r.Context(), caller(r))
	now := s.Manager.Now().UTC()
	end := p.TokensEndBy(ks, now).Add(p.Leeway)  // a jti's exp may reach this
	subjectsUntil := p.RevocationsEndBy(ks, now) // a subject's entry lives this long
	res := ImportResult{Errors: []ImportError{}}
	batch := make([]tokenstate.Revocation, 0, importBatch)
	flush := func() error {
		n, err := s.Manager.ImportRevocations(ctx, name, batch)
		res.Imported += n
		for _, rev := range batch {
			if err == nil && rev.IsSubject() && s.Refresh != nil {
				// The subject's logins end too, as with {"sub"} alone.
				err = s.Refresh.RevokeSubject(ctx, name, rev.Subject, rev.Before)
			}
		}
		batch = batch[:0]
		return err
	}
	sc := bufio.NewScanner(http.MaxBytesReader(w, r.Body, MaxImportBytes))
	sc.Buffer(make([]byte, 0, 64<<10), 64<<10)
	var werr error
	for line := 1; werr == nil && sc.Scan(); line++ {
		raw := bytes.TrimSpace(sc.Bytes())
		if len(raw) == 0 {
			continue
		}
		rev, expired, err := parseImportLine(raw, name, now, end, subjectsUntil, p.Leeway)
		switch {
		case err != nil:
			res.Refused++
			if len(res.Errors) < maxImportErrors {
				res.Errors = append(res.Errors, ImportError{Line: line, Error: err.Error()})
			}
		case expired:
			res.Expired++
		default:
			if batch = append(batch, rev); len(batch) == importBatch {
				werr = flush()
			}
		}
	}
	if werr == nil {
		werr = sc.Err()
	}
	if werr == nil {
		werr = flush()
	}
	s.Manager.ImportDone(ctx, name, res.Imported, res.Expired+res.Refused, werr)
	var tooLarge *http.MaxBytesError
	switch {
	case errors.As(werr, &tooLarge):
		s.fail(w, r, errorf("too_large", "an import is at most %d bytes; %d lines were imported, split the rest", MaxImportBytes, res.Imported))
		return
	case errors.Is(werr, os.ErrDeadlineExceeded):
		s.fail(w, r, errorf("request_timeout", "the import took longer than %v; %d lines were imported, send the rest", ImportTimeout, res.Imported))
		return
	case errors.Is(werr, bufio.ErrTooLong):
		s.fail(w, r, errorf("bad_request", "a line is longer than 64 KiB; %d lines were imported before it", res.Imported))
		return
	case werr != nil:
		s.fail(w, r, werr)
		return
	}
	res.InForce = s.Manager.Revocations().Len(name)
	writeJSON(w, http.StatusOK, res)
}

// parseImportLine reads one line of an import into a revocation, or says
// why it is refused; expired is true for a token that has expired already.
func parseImportLine(raw []byte, keyset string, now, end, subjectsUntil time.Time, leeway time.Duration) (rev tokenstate.Revocation, expired bool, err error) {
	var l importLine
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	dec.UseNumber()
	if err := dec.Decode(&l); err != nil {
		return rev, false, fmt.Errorf("not a JSON object of jti and exp, or sub and before: %v", err)
	}
	if len(l.Reason) > maxReason {
		return rev, false, fmt.Errorf("reason is longer than %d bytes", maxReason)
	}
	seconds := func(n json.Number, field string) (time.Time, error) {
		v, err := strconv.ParseInt(n.String(), 10, 64)
		if err != nil {
			return time.Time{}, fmt.Errorf("%s must be whole seconds since the epoch, got %q", field, n)
		}
		return time.Unix(v, 0).UTC(), nil
	}
	rev = tokenstate.Revocation{KeySet: keyset, RevokedAt: now, Reason: l.Reason}
	switch {
	case (l.JTI == "") == (l.Sub == ""):
		return rev, false, errors.New(`give one of "jti" (with "exp") or "sub"`)
	case l.JTI != "":
		if l.Exp == "" {
			return rev, false, errors.New(`"exp" goes with "jti": the token's exp, Unix seconds`)
		}
		exp, err := seconds(l.Exp, "exp")
		if err != nil {
			return rev, false, err
		}
		if exp.Add(leeway).Before(now) {
			return rev, true, nil
		}
		if exp.After(end) {
			return rev, false, fmt.Errorf("exp %s is beyond %s, when the last token this key set verifies expires", exp.Format(time.RFC3339), end.Format(time.RFC3339))
		}
		rev.JTI, rev.Expires = l.JTI, exp.Add(leeway)
	default:
		before := now.Truncate(time.Second)
		if l.Before != "" {
			if before, err = seconds(l.Before, "before"); err != nil {
				return rev, false, err
			}
			if before.After(now) {
				return rev, false, fmt.Errorf("before %s is in the future", before.Format(time.RFC3339))
			}
		}
		rev.Subject, rev.Before, rev.Expires = l.Sub, before, subjectsUntil
	}
	return rev, false, nil
}
