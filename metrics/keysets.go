package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/keyd-dev/keyd/keystore"
)

// KeySets is what the key set gauges are read from at scrape time: the
// rotation manager's view of the configured key sets and of the store.
type KeySets interface {
	Names() []string
	KeySet(name string) (*keystore.KeySet, keystore.Policy, error)
	NextRotation(name string) (time.Time, error)
	Health() (started bool, storeErr error)
	TokenStateHealth() error
}

// WatchKeySets exports the gauges read from src at every scrape:
// keyd_keys{keyset,state}, keyd_active_key_age_seconds{keyset},
// keyd_next_rotation_timestamp_seconds{keyset} and keyd_store_up.
func (m *Metrics) WatchKeySets(src KeySets, now func() time.Time) {
	if m != nil {
		m.reg.MustRegister(&keySetCollector{src: src, now: now})
		for _, name := range src.Names() { // exported at 0 from the start, for increase()
			m.keysRefused.WithLabelValues(name)
		}
	}
}

var (
	keysDesc = prometheus.NewDesc("keyd_keys", "Keys of each key set by lifecycle state.", []string{"keyset", "state"}, nil)
	ageDesc  = prometheus.NewDesc("keyd_active_key_age_seconds", "How long the active key has been signing.", []string{"keyset"}, nil)
	nextDesc = prometheus.NewDesc("keyd_next_rotation_timestamp_seconds", "When the scheduler will rotate the key set next (Unix time).", []string{"keyset"}, nil)
	upDesc   = prometheus.NewDesc("keyd_store_up", "1 when the last key store operation succeeded, 0 while the store is unavailable.", nil, nil)
	tokenUp  = prometheus.NewDesc("keyd_token_state_up", "1 when the last token state operation (Redis, or the key store's records) succeeded or /readyz's probe did, 0 while it is unavailable.", nil, nil)
)

var states = []keystore.State{keystore.StatePending, keystore.StateActive, keystore.StateRetired, keystore.StateRevoked}

type keySetCollector struct {
	src KeySets
	now func() time.Time
}

func (c *keySetCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- keysDesc
	ch <- ageDesc
	ch <- nextDesc
	ch <- upDesc
	ch <- tokenUp
}

func (c *keySetCollector) Collect(ch chan<- prometheus.Metric) {
	_, storeErr := c.src.Health()
	up := 1.0
	if storeErr != nil {
		up = 0
	}
	ch <- prometheus.MustNewConstMetric(upDesc, prometheus.GaugeValue, up)
	tup := 1.0
	if c.src.TokenStateHealth() != nil {
		tup = 0
	}
	ch <- prometheus.MustNewConstMetric(tokenUp, prometheus.GaugeValue, tup)
	now := c.now()
	for _, name := range c.src.Names() {
		ks, _, err := c.src.KeySet(name)
		if err != nil { // not loaded yet
			continue
		}
		count := map[keystore.State]int{}
		for _, k := range ks.Keys {
			count[k.State]++
		}
		for _, s := range states {
			ch <- prometheus.MustNewConstMetric(keysDesc, prometheus.GaugeValue, float64(count[s]), name, string(s))
		}
		if active, ok := ks.Active(); ok {
			ch <- prometheus.MustNewConstMetric(ageDesc, prometheus.GaugeValue, now.Sub(active.ActivatedAt).Seconds(), name)
		}
		if next, err := c.src.NextRotation(name); err == nil {
			ch <- prometheus.MustNewConstMetric(nextDesc, prometheus.GaugeValue, float64(next.Unix()), name)
		}
	}
}
