package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// backupMetrics are the scheduled backups' (backup.schedule).
type backupMetrics struct {
	last   prometheus.Gauge
	period prometheus.Gauge
	errors prometheus.Counter
}

func newBackupMetrics(reg *prometheus.Registry) backupMetrics {
	b := backupMetrics{
		last: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "keyd_backup_last_success_timestamp_seconds",
			Help: "When the newest scheduled backup was written (Unix seconds); at start, the newest backup found in backup.to.",
		}),
		period: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "keyd_backup_period_seconds",
			Help: "The shortest gap between two scheduled backups (backup.schedule); the alert fires past two of them without a backup.",
		}),
		errors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "keyd_backup_errors_total", Help: "Scheduled backups that failed.",
		}),
	}
	reg.MustRegister(b.last, b.period, b.errors)
	return b
}

// BackupScheduled says how often scheduled backups run.
func (m *Metrics) BackupScheduled(period time.Duration) {
	if m == nil {
		return
	}
	m.backups.period.Set(period.Seconds())
}

// BackupDone records a scheduled backup: written at at, or failed.
func (m *Metrics) BackupDone(at time.Time, err error) {
	if m == nil {
		return
	}
	if err != nil {
		m.backups.errors.Inc()
		return
	}
	m.backups.last.Set(float64(at.UnixNano()) / 1e9)
}
