package refresh

import (
	"context"
	"time"
)

// SetSleep makes s wait with sleep (tests: no time passes).
func (s *Service) SetSleep(sleep func(ctx context.Context, d time.Duration) bool) { s.sleep = sleep }
