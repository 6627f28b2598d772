package audit

import (
	"encoding/json"

	"github.com/keyd-dev/keyd/rotation"
)

// RotationEvent records a key set change (rotation.Options.Events):
// created, rotated (with its trigger), revoked, destroyed.
func (l *Log) RotationEvent(e rotation.Event) {
	l.Note(Record{
		Time: e.Time, Event: string(e.Kind), KeySet: e.KeySet, KID: e.KID,
		Pending: e.Pending, Trigger: e.Trigger, Actor: e.Actor, JTI: e.JTI, Reason: e.Reason,
		Sub: subject(e.Subject),
	})
}

func subject(s string) []byte {
	if s == "" {
		return nil
	}
	b, _ := json.Marshal(s)
	return Claim(b)
}
