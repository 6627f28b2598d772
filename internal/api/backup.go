package api

import (
	"net/http"
	"strings"
	"time"

	"github.com/keyd-dev/keyd/audit"
	"github.com/keyd-dev/keyd/backup"
)

// BackupTimeout bounds one backup request: a million revocations and a
// million logins take some tens of seconds.
const BackupTimeout = 30 * time.Minute

type backupRequest struct {
	Recipients []string `json:"recipients"`
}

// backup answers a backup of every key set and all token state, encrypted
// to the age recipients of the request (public keys: the caller needs no
// secret to ask, and keyd cannot read what it wrote). Nothing is sent
// until the whole backup is made, so an error is a JSON answer; the
// request is audited before any key is read.
func (s *server) backup(w http.ResponseWriter, r *http.Request) {
	var req backupRequest
	if err := decode(w, r, &req, false); err != nil {
		s.fail(w, r, err)
		return
	}
	if _, err := backup.ParseRecipients(req.Recipients); err != nil {
		writeError(w, errorf("bad_request", "%v", err))
		return
	}
	rec := audit.Record{Event: audit.EventBackup, Caller: caller(r), Remote: r.RemoteAddr, Detail: "recipients: " + strings.Join(req.Recipients, " ")}
	if err := s.Audit.Record(rec); err != nil {
		s.fail(w, r, err)
		return
	}
	rc := http.NewResponseController(w)
	_ = rc.SetWriteDeadline(time.Now().Add(BackupTimeout))
	out := &firstWrite{w: w}
	if _, err := s.Backup(r.Context(), out, req.Recipients); err != nil {
		if !out.started {
			s.fail(w, r, err)
			return
		}
		s.Logger.Error("backup cut off while sent", "err", err)
		panic(http.ErrAbortHandler) // the client sees a truncated file, which it checks
	}
}

// firstWrite sets the backup's headers when its first byte goes out.
type firstWrite struct {
	w       http.ResponseWriter
	started bool
}

func (f *firstWrite) Write(b []byte) (int, error) {
	if !f.started {
		f.started = true
		h := f.w.Header()
		h.Set("Content-Type", "application/octet-stream")
		h.Set("Cache-Control", "no-store")
		h.Set("Content-Disposition", `attachment; filename="keyd.backup"`)
		f.w.WriteHeader(http.StatusOK)
	}
	return f.w.Write(b)
}
