package audit

import "github.com/keyd-dev/keyd/rotation"

// RotationEvent records a key set change (rotation.Options.Events):
// created, rotated (with its trigger), revoked, destroyed.
func (l *Log) RotationEvent(e rotation.Event) {
	l.Note(Record{
		Time: e.Time, Event: string(e.Kind), KeySet: e.KeySet, KID: e.KID,
		Pending: e.Pending, Trigger: e.Trigger, Actor: e.Actor,
	})
}
