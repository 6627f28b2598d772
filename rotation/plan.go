package rotation

import (
	"time"

	"github.com/robfig/cron/v3"

	"github.com/keyd-dev/keyd/keystore"
)

// Plan is what a tick should do to a key set at a given time. It is a pure
// function of the stored key set, its policy, its schedule and the time
// ([Decide]), so a restart, a missed tick or several replicas all reach the
// same plan from the same state.
type Plan struct {
	// DueAt is when the next rotation is due: the schedule's first tick
	// after the key set's last rotation.
	DueAt time.Time
	// Rotate is set when the rotation is due and the pending key has been
	// published for at least jwks_max_age.
	Rotate bool
	// WaitUntil is set when the rotation is due but the pending key is
	// still too young (after a forced rotation or a revocation made a new
	// one): rotating waits until then.
	WaitUntil time.Time
	// WaitingFor says what else the rotation waits for (publishing
	// targets, see Gate); "" when it waits for jwks_max_age alone.
	WaitingFor string
	// Destroy lists retired and revoked keys whose grace has ended.
	Destroy []string
	// Certify lists published keys whose certificate is missing or due
	// for renewal (key sets with certificates).
	Certify []string
	// NextCheck is the earliest time at which the plan changes if nothing
	// else happens: the next due time, the end of a wait, or the next end
	// of a grace period, or the next certificate renewal.
	NextCheck time.Time
}

// Idle reports whether the plan writes nothing.
func (p Plan) Idle() bool { return !p.Rotate && len(p.Destroy) == 0 && len(p.Certify) == 0 }

// Decide plans a tick for ks at now.
func Decide(ks *keystore.KeySet, p keystore.Policy, sched cron.Schedule, now time.Time) Plan {
	var plan Plan
	plan.DueAt = sched.Next(ks.RotatedAt)
	soonest := func(t time.Time) {
		if !t.IsZero() && (plan.NextCheck.IsZero() || t.Before(plan.NextCheck)) {
			plan.NextCheck = t
		}
	}
	if pending, ok := ks.Pending(); ok && !plan.DueAt.IsZero() && !now.Before(plan.DueAt) {
		if readyAt := pending.CreatedAt.Add(p.PublishedFor()); now.Before(readyAt) {
			plan.WaitUntil = readyAt
			soonest(readyAt)
		} else {
			plan.Rotate = true
			soonest(sched.Next(now))
		}
	} else {
		soonest(plan.DueAt)
	}
	grace := p.Grace()
	for _, k := range ks.Keys {
		at := keystore.DestroyAt(k, grace)
		if at.IsZero() {
			continue
		}
		if !now.Before(at) {
			plan.Destroy = append(plan.Destroy, k.ID)
		} else {
			soonest(at)
		}
	}
	if plan.Rotate { // the key retired now is destroyed one grace from now
		soonest(now.Add(grace))
	}
	var renewAt time.Time
	plan.Certify, renewAt = dueCertificates(ks, p.Certificates, now)
	soonest(renewAt)
	return plan
}
