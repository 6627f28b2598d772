package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// publishMetrics are the publishing targets' (publish[]).
type publishMetrics struct {
	last   *prometheus.GaugeVec
	errors *prometheus.CounterVec
}

func newPublishMetrics(reg *prometheus.Registry) publishMetrics {
	p := publishMetrics{
		last: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "keyd_publish_last_success_timestamp_seconds",
			Help: "When the target last confirmed (read back) holding keyd's documents (Unix seconds), by target.",
		}, []string{"target"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keyd_publish_errors_total", Help: "Failed writes or read-backs of a publishing target, by target.",
		}, []string{"target"}),
	}
	reg.MustRegister(p.last, p.errors)
	return p
}

// PublishDone records a publishing target's write: confirmed at at, or
// failed.
func (m *Metrics) PublishDone(target string, at time.Time, err error) {
	if m == nil {
		return
	}
	if err != nil {
		m.publish.errors.WithLabelValues(target).Inc()
		return
	}
	m.publish.last.WithLabelValues(target).Set(float64(at.UnixNano()) / 1e9)
}

// PublishTargets makes the series of each target, its last success the
// start (the alert counts from there).
func (m *Metrics) PublishTargets(names []string, start time.Time) {
	if m == nil {
		return
	}
	for _, n := range names {
		m.publish.errors.WithLabelValues(n).Add(0)
		m.publish.last.WithLabelValues(n).Set(float64(start.UnixNano()) / 1e9)
	}
}
