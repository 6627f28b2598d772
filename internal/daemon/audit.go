package daemon

import (
	"encoding/json"

	"github.com/keyd-dev/keyd/audit"
	"github.com/keyd-dev/keyd/rotation"
)

// auditRotation records key set changes (rotation.Options.Events) in the
// audit trail: created, rotated (with its trigger), revoked, destroyed.
// It is part of the wiring so that audit imports nothing of rotation.
func auditRotation(l *audit.Log) func(rotation.Event) {
	return func(e rotation.Event) {
		l.Note(audit.Record{
			Time: e.Time, Event: string(e.Kind), KeySet: e.KeySet, KID: e.KID,
			Pending: e.Pending, Trigger: e.Trigger, Actor: e.Actor, JTI: e.JTI, Reason: e.Reason,
			Sub: subjectClaim(e.Subject),
		})
	}
}

// subjectClaim is a revoked subject as the audit trail keeps claims.
func subjectClaim(s string) []byte {
	if s == "" {
		return nil
	}
	b, _ := json.Marshal(s)
	return audit.Claim(b)
}
