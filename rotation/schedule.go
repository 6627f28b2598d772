package rotation

import (
	"fmt"
	"time"

	"github.com/robfig/cron/v3"
)

// parser accepts five fields, an optional leading seconds field, and the
// descriptors (@daily, @hourly, @every 90m, ...).
var parser = cron.NewParser(cron.SecondOptional | cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

// ParseSchedule parses a rotation cron spec.
func ParseSchedule(spec string) (cron.Schedule, error) {
	if spec == "" {
		return nil, fmt.Errorf("empty cron spec")
	}
	return parser.Parse(spec)
}

// MinGap returns the shortest time between two consecutive ticks of s,
// found by walking its ticks from a fixed start over four years (every
// calendar pattern repeats within that) or 100,000 ticks, whichever comes
// first. It returns 0 for a schedule that never fires.
func MinGap(s cron.Schedule) time.Duration {
	start := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	end := start.AddDate(4, 0, 0)
	prev := s.Next(start)
	if prev.IsZero() {
		return 0
	}
	var minGap time.Duration
	for range 100_000 {
		next := s.Next(prev)
		if next.IsZero() || next.After(end) {
			break
		}
		if gap := next.Sub(prev); minGap == 0 || gap < minGap {
			minGap = gap
		}
		prev = next
	}
	if minGap == 0 { // fires once in four years or less: a yearly spec
		minGap = end.Sub(start)
	}
	return minGap
}
