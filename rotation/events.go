package rotation

import (
	"context"
	"time"
)

// EventKind says what changed in a key set.
type EventKind string

// Event kinds.
const (
	EventCreated   EventKind = "keyset_created" // a configured key set was made, with its first keys
	EventRotated   EventKind = "rotated"        // the pending key became active
	EventRevoked   EventKind = "revoked"        // a key was revoked by hand
	EventDestroyed EventKind = "destroyed"      // a retired or revoked key's grace ended
)

// Triggers of a rotation, as metrics label them.
const (
	TriggerScheduled = "scheduled"
	TriggerManual    = "manual"
	TriggerForced    = "forced"
	TriggerRevoke    = "revoke"
)

// Event is one change this process made to a key set, told to every
// Options.Events function after the change is stored: metrics count them
// and the audit trail records them. Changes other replicas made are theirs
// to tell.
type Event struct {
	Time    time.Time
	Kind    EventKind
	KeySet  string
	KID     string // the new active key (created, rotated), the revoked or destroyed key
	Pending string // the new pending key, when one was made
	Trigger string // rotated and revoked: one of the Trigger constants
	Actor   string // who asked: the API caller's name (WithActor), or "scheduler"
	JTI     string // token_revoked: the token's jti
	Subject string // subject_revoked: the subject (audit records keep it, metrics never)
	Reason  string // revocations: the reason given
}

type actorKey struct{}

// WithActor names who asks for the transitions made with ctx, for events.
func WithActor(ctx context.Context, name string) context.Context {
	return context.WithValue(ctx, actorKey{}, name)
}

func actorOf(ctx context.Context) string {
	if a, ok := ctx.Value(actorKey{}).(string); ok {
		return a
	}
	return "scheduler"
}

// emit tells every listener about e.
func (m *Manager) emit(e Event) {
	if e.Time.IsZero() {
		e.Time = m.now().UTC()
	}
	for _, f := range m.events {
		f(e)
	}
}
