package refresh

import (
	"context"
	"errors"
	"time"

	"github.com/keyd-dev/keyd/keystore"
)

// maxOrphans bounds the logins waiting to be forgotten; past it, more
// are dropped (they expire with their login's lifetime).
const maxOrphans = 4096

// orphan notes a login whose creation failed with the store unavailable:
// its write may still land (a frozen Redis runs what it had queued when it
// resumes), and nobody holds its refresh token. ForgetOrphans deletes it.
func (s *Service) orphan(id string) {
	select {
	case s.orphans <- id:
	default:
	}
}

// ForgetOrphans deletes the logins whose creation failed (see orphan)
// until ctx ends: once the store answers again, and once more a second
// later, when any write queued behind the outage has landed. It is one
// of the daemon's actors.
func (s *Service) ForgetOrphans(ctx context.Context) {
	for {
		var batch []string
		select {
		case <-ctx.Done():
			return
		case id := <-s.orphans:
			batch = append(batch, id)
		}
		for len(batch) < maxOrphans && len(s.orphans) > 0 {
			batch = append(batch, <-s.orphans)
		}
		for pass := range 2 {
			for _, id := range batch {
				if !s.deleteWhenBack(ctx, id) {
					return
				}
			}
			if pass == 0 && !s.sleep(ctx, time.Second) {
				return
			}
		}
	}
}

// deleteWhenBack deletes the login id, retrying while the store is
// unavailable; false when ctx ended first.
func (s *Service) deleteWhenBack(ctx context.Context, id string) bool {
	for wait := 100 * time.Millisecond; ; wait = min(2*wait, 5*time.Second) {
		err := s.store.DeleteRecord(ctx, Kind, id)
		if err == nil || !errors.Is(err, keystore.ErrUnavailable) {
			return ctx.Err() == nil
		}
		if !s.sleep(ctx, wait) {
			return false
		}
	}
}
