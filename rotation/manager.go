// Package rotation changes key sets: it creates the configured key sets at
// start, rotates and revokes keys, and keeps every consumer (the signer, the
// JWKS) loaded with the newest version of each key set.
//
// Decisions are made on the state read inside keystore.Update, so they hold
// even when another writer changed the key set first; new keys are made
// before the transition, off the signing path. Transitions inside one
// process are serialised by a mutex, so two rotations never race here; the
// store's compare-and-swap keeps several processes apart.
package rotation

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/robfig/cron/v3"

	"github.com/keyd-dev/keyd/keystore"
	"github.com/keyd-dev/keyd/tokenstate"
)

var (
	// ErrUnknownKeySet means the key set is not configured.
	ErrUnknownKeySet = errors.New("unknown key set")
	// ErrTooEarly means a rotation would activate a pending key that has
	// not been published for jwks_max_age yet; see TooEarlyError.
	ErrTooEarly = errors.New("pending key is too young to sign")
)

// TooEarlyError says when rotating becomes safe.
type TooEarlyError struct {
	KeySet string
	KID    string
	SafeAt time.Time
	Why    string // what holds it back besides jwks_max_age (publishing targets); "" for none
}

func (e *TooEarlyError) Error() string {
	if e.Why != "" {
		return fmt.Sprintf("pending key %s of %s cannot sign yet: %s. Rotating is safe from %s at the earliest, or force it",
			e.KID, e.KeySet, e.Why, e.SafeAt.UTC().Format(time.RFC3339))
	}
	return fmt.Sprintf("pending key %s of %s has been published for less than jwks_max_age (plus the replicas' poll interval); verifiers with a cached JWKS would reject its tokens. Rotating is safe from %s, or force it",
		e.KID, e.KeySet, e.SafeAt.UTC().Format(time.RFC3339))
}

func (e *TooEarlyError) Unwrap() error { return ErrTooEarly }

// Listener is told about every new version of a key set: the signer and the
// JWKS publisher both are.
type Listener interface {
	Load(keystore.Policy, *keystore.KeySet) error
}

// Options configure a Manager.
type Options struct {
	Store     keystore.Store
	Policies  []keystore.Policy
	Generator keystore.Generator // default keystore.GenerateMaterial
	Now       func() time.Time   // default time.Now
	Logger    *slog.Logger       // default slog.Default()
	Listeners []Listener
	// Events are told about every change this process makes, after it is
	// stored; they must be quick (they run under the manager's lock).
	Events []func(Event)
	// After waits for a duration; default time.After. Tests replace it.
	After func(time.Duration) <-chan time.Time
	// TokenState keeps token revocations, one entry each; Revocations is
	// the index verification checks (the signer's). Without TokenState,
	// revoking tokens is refused.
	TokenState  tokenstate.Store
	Revocations *tokenstate.Index
	// Refused is told each time a stored key set is refused for a key not
	// of its custody, or a custody object is not destroyed because it is
	// not keyd's (keyd_keys_refused_total).
	Refused func(keyset string)
	// Rejected is told each time an entry read from the token state is
	// refused: a revocation of a key set that is not configured, or a
	// published one past max_revocations (kind "revocation").
	Rejected func(kind string)
	// Gate holds back rotations until a pending key may sign as far as
	// the publishing targets are concerned (nil: nothing does).
	Gate Gate
}

// Manager owns the configured key sets' lifecycle in one process.
type Manager struct {
	store     keystore.Store
	conf      atomic.Pointer[settings] // replaced whole by Start and Reconfigure
	gen       keystore.Generator
	now       func() time.Time
	log       *slog.Logger
	listeners []Listener
	events    []func(Event)
	tokens    tokenstate.Store
	revs      *tokenstate.Index

	after func(time.Duration) <-chan time.Time
	wake  atomic.Pointer[chan struct{}] // closed by Reconfigure: the scheduler looks again

	// Locks. None shared between key sets is held across store, custody
	// or network I/O: a slow custody or store round trip of one key set
	// stalls no other.
	confMu  sync.Mutex // Start and Reconfigure: one change of settings at a time
	setMu   sync.Map   // key set name -> *sync.Mutex: this process's writes of one key set, in order
	pubMu   sync.Mutex // the listeners and current: in-memory work only
	current atomic.Pointer[map[string]*keystore.KeySet]

	waitMu     sync.Mutex
	waitLogged map[string]string // key set -> pending kid whose wait was logged

	onRefused  func(keyset string)
	onRejected func(kind string)
	pubGate    Gate
	waitingFor sync.Map // key set -> why its due rotation waits (string)
	refusedMu  sync.Mutex
	refusedAt  map[string]uint64 // key set -> the stored version last refused (logged once)

	started  atomic.Bool
	storeErr atomic.Pointer[error] // last store failure; nil after a success
	tokenErr atomic.Pointer[error] // last token state failure (Redis); nil after a success

	watch struct { // the revocations watch and the start-up load: which came first
		mu         sync.Mutex
		subscribed chan struct{} // made by WatchRevocations, closed at its first subscription
		loadBegun  bool          // the start-up load of the index has begun
	}
}

// NewManager returns a Manager; call Start before anything else.
func NewManager(o Options) *Manager {
	m := &Manager{
		store: o.Store, gen: o.Generator, now: o.Now, log: o.Logger,
		listeners: o.Listeners, events: o.Events, after: o.After, waitLogged: map[string]string{},
		tokens: o.TokenState, revs: o.Revocations, onRefused: o.Refused, onRejected: o.Rejected, refusedAt: map[string]uint64{}, pubGate: o.Gate,
	}
	if m.revs == nil {
		m.revs = tokenstate.NewIndex()
	}
	if m.after == nil {
		m.after = time.After
	}
	if m.gen == nil {
		m.gen = keystore.GenerateMaterial
	}
	if m.now == nil {
		m.now = time.Now
	}
	if m.log == nil {
		m.log = slog.Default()
	}
	conf := &settings{policies: map[string]keystore.Policy{}, schedules: map[string]cron.Schedule{}}
	for _, p := range o.Policies {
		conf.policies[p.Name] = p
	}
	m.conf.Store(conf)
	wake := make(chan struct{})
	m.wake.Store(&wake)
	m.current.Store(&map[string]*keystore.KeySet{})
	return m
}

// settings are the configured key sets: their policies and parsed
// schedules, never modified once stored.
type settings struct {
	policies  map[string]keystore.Policy
	schedules map[string]cron.Schedule
}

// Policy returns the current settings of a configured key set.
func (m *Manager) Policy(name string) (keystore.Policy, bool) {
	p, ok := m.conf.Load().policies[name]
	return p, ok
}

// Start loads every configured key set from the store, creating the ones
// that do not exist yet (one active and one pending key), and hands them to
// the listeners. A stored key set whose algorithm differs from its config
// is an error: keyd never silently replaces keys.
func (m *Manager) Start(ctx context.Context) error {
	m.confMu.Lock()
	defer m.confMu.Unlock()
	conf, err := newSettings(slices.Collect(maps.Values(m.conf.Load().policies)))
	if err != nil {
		return err
	}
	m.conf.Store(conf)
	// One read for every stored key set, then the missing ones made
	// concurrently, then every listener loaded once: a thousand key sets
	// start in seconds, not one store round trip and one re-render each.
	stored, err := m.store.List(ctx)
	if err != nil {
		return err
	}
	byName := map[string]*keystore.KeySet{}
	for _, ks := range stored {
		if _, ok := conf.policies[ks.Name]; !ok {
			m.log.Warn("key set is in the store but not in the config; it is not served", "keyset", ks.Name)
			continue
		}
		byName[ks.Name] = ks
	}
	var missing []keystore.Policy
	for _, name := range slices.Sorted(maps.Keys(conf.policies)) {
		if _, ok := byName[name]; !ok {
			missing = append(missing, conf.policies[name])
		}
	}
	created, err := m.createAll(ctx, missing)
	if err != nil {
		return err
	}
	maps.Copy(byName, created)
	var ps []keystore.Policy
	var sets []*keystore.KeySet
	for _, name := range slices.Sorted(maps.Keys(conf.policies)) {
		p, ks := conf.policies[name], byName[name]
		if err := checkStored(p, ks); err != nil {
			return err
		}
		if err := keystore.CheckLegacy(p, ks, m.now()); err != nil {
			// At start only said: the key may have gone at its
			// verify_until while the setting stayed; a reload refuses it.
			m.log.Error("tokens without a kid will not verify", "keyset", p.Name, "err", err)
		}
		ps, sets = append(ps, p), append(sets, ks)
	}
	m.pubMu.Lock()
	err = m.publishAll(ps, sets)
	m.pubMu.Unlock()
	if err != nil {
		return err
	}
	known := custodyRefs(sets)
	for _, p := range ps {
		if p.Custody != nil {
			m.sweep(ctx, p, known)
		}
	}
	if err := m.loadRevocations(ctx, sets); err != nil {
		return err
	}
	m.started.Store(true)
	return nil
}

func newSettings(policies []keystore.Policy) (*settings, error) {
	conf := &settings{policies: map[string]keystore.Policy{}, schedules: map[string]cron.Schedule{}}
	for _, p := range policies {
		sched, err := ParseSchedule(p.Rotation)
		if err != nil {
			return nil, fmt.Errorf("key set %s: rotation %q: %w", p.Name, p.Rotation, err)
		}
		conf.policies[p.Name], conf.schedules[p.Name] = p, sched
	}
	return conf, nil
}

// lockSet serialises this process's writes of the key set called name
// (a tick, a manual transition, its creation) and returns the unlock. It
// is held across that key set's own store and custody calls, which keeps
// its transitions, logs and events in order; other key sets never wait
// for it.
func (m *Manager) lockSet(name string) (unlock func()) {
	v, _ := m.setMu.LoadOrStore(name, new(sync.Mutex))
	mu := v.(*sync.Mutex)
	mu.Lock()
	return mu.Unlock
}

// load reads the key set of p from the store, creating it when it does not
// exist yet, and checks it.
func (m *Manager) load(ctx context.Context, p keystore.Policy) (*keystore.KeySet, error) {
	defer m.lockSet(p.Name)()
	ks, err := m.store.Get(ctx, p.Name)
	if errors.Is(err, keystore.ErrNotFound) {
		ks, err = m.create(ctx, p)
	}
	if err != nil {
		return nil, fmt.Errorf("key set %s: %w", p.Name, err)
	}
	return ks, checkStored(p, ks)
}

// checkStored refuses a stored key set that does not match its config or
// breaks the invariants.
func checkStored(p keystore.Policy, ks *keystore.KeySet) error {
	if ks.Algorithm != p.Algorithm {
		return fmt.Errorf("key set %s: the config says algorithm %s but the store holds %s keys; keyd will not replace them (use a new key set name to change algorithm)", p.Name, p.Algorithm, ks.Algorithm)
	}
	return ks.Check()
}

// BatchListener is a Listener that can take many key sets in one call (at
// start), building its state once instead of once per key set.
type BatchListener interface {
	Listener
	LoadAll(ps []keystore.Policy, sets []*keystore.KeySet) error
}

// publishAll loads every key set into every listener, in one call where
// the listener takes batches, and records them as current, whatever
// version is current already (publish checks that). Callers hold
// m.pubMu.
func (m *Manager) publishAll(ps []keystore.Policy, sets []*keystore.KeySet) error {
	if err := m.admit(ps, sets); err != nil {
		return err
	}
	for _, l := range m.listeners {
		if bl, ok := l.(BatchListener); ok {
			if err := bl.LoadAll(ps, sets); err != nil {
				return err
			}
			continue
		}
		for i := range sets {
			if err := l.Load(ps[i], sets[i]); err != nil {
				return fmt.Errorf("load key set %s: %w", sets[i].Name, err)
			}
		}
	}
	next := maps.Clone(*m.current.Load())
	for _, ks := range sets {
		next[ks.Name] = ks
	}
	m.current.Store(&next)
	return nil
}

// Reconfigure applies new key set settings while running (a config
// reload): changed timings, issuer and schedules of existing key sets, and
// new key sets, created in the store as at start. It refuses, changing
// nothing in memory, a change of algorithm, the removal of a key set, or a
// new key set it cannot load or create; a new key set created before such
// a refusal stays in the store, unserved, as any stored key set missing
// from the config does.
func (m *Manager) Reconfigure(ctx context.Context, policies []keystore.Policy) error {
	conf, err := newSettings(policies)
	if err != nil {
		return err
	}
	m.confMu.Lock()
	defer m.confMu.Unlock()
	old := m.conf.Load()
	for name, p := range old.policies {
		np, ok := conf.policies[name]
		switch {
		case !ok:
			return fmt.Errorf("key set %s: removing a key set needs a restart (its tokens may still be in use)", name)
		case np.Algorithm != p.Algorithm:
			return fmt.Errorf("key set %s: the algorithm cannot change from %s to %s; use a new key set name", name, p.Algorithm, np.Algorithm)
		}
		if err := keystore.CheckLegacy(np, (*m.current.Load())[name], m.now()); err != nil {
			return err // a typo in legacy.kid: every token without a kid would fail
		}
	}
	added := map[string]*keystore.KeySet{}
	for _, name := range slices.Sorted(maps.Keys(conf.policies)) {
		if _, ok := old.policies[name]; ok {
			continue
		}
		ks, err := m.load(ctx, conf.policies[name]) // store and custody I/O: no shared lock held
		if m.note(err) != nil {
			return err
		}
		added[name] = ks
	}
	// The settings and every key set again, even at a version already
	// loaded (its settings changed), as one step: a tick publishing
	// meanwhile comes before it or after it, and is never undone by it.
	m.pubMu.Lock()
	defer m.pubMu.Unlock()
	m.conf.Store(conf)
	var ps []keystore.Policy
	var sets []*keystore.KeySet
	for _, name := range slices.Sorted(maps.Keys(conf.policies)) {
		ks, ok := added[name]
		if !ok {
			ks = (*m.current.Load())[name]
		}
		if ks != nil { // nil: not loaded yet (start-up still retrying)
			ps, sets = append(ps, conf.policies[name]), append(sets, ks)
		}
	}
	if err := m.publishAll(ps, sets); err != nil {
		return err
	}
	wake := make(chan struct{})
	close(*m.wake.Swap(&wake))
	return nil
}

// note records the outcome of a store operation for Health.
func (m *Manager) note(err error) error {
	switch {
	case err == nil:
		m.storeErr.Store(nil)
	case errors.Is(err, keystore.ErrUnavailable):
		m.storeErr.Store(&err)
	}
	return err
}

// Health reports whether Start has loaded every key set and the last store
// failure, nil if the last store operation succeeded.
func (m *Manager) Health() (started bool, storeErr error) {
	if p := m.storeErr.Load(); p != nil {
		storeErr = *p
	}
	return m.started.Load(), storeErr
}

// Refresh reloads every configured key set from the store and hands newer
// versions to the listeners: how a replica picks up what others changed.
func (m *Manager) Refresh(ctx context.Context) error {
	if _, watched := m.tokens.(tokenstate.Watcher); m.tokens != nil && !watched {
		// Other replicas' revocations: every entry, merged into the index
		// (a token state that tells its changes needs no polling).
		if err := m.syncRevocations(ctx); err != nil {
			return err
		}
	}
	var refused []error // a key set refused (a foreign key) holds up no other
	for _, name := range m.Names() {
		ks, err := m.store.Get(ctx, name)
		if m.note(err) != nil {
			return err
		}
		if err := m.publish(ks); err != nil {
			refused = append(refused, err)
		}
	}
	return errors.Join(refused...)
}

// Poll calls Refresh every interval until ctx is cancelled, logging
// failures (keyd keeps serving from memory meanwhile).
func (m *Manager) Poll(ctx context.Context, interval time.Duration) {
	failing := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-m.after(interval):
		}
		err := m.Refresh(ctx)
		switch {
		case ctx.Err() != nil:
			return
		case err != nil && !failing:
			m.log.Error("store unavailable: serving keys from memory until it returns", "err", err)
		case err == nil && failing:
			m.log.Info("store available again")
		}
		failing = err != nil
	}
}

// certified logs and records the certificates a write issued.
func (m *Manager) certified(ctx context.Context, name string, kids []string) {
	for _, kid := range kids {
		m.log.Info("issued certificate", "keyset", name, "kid", kid)
		m.emit(Event{Kind: EventCertified, KeySet: name, KID: kid, Actor: actorOf(ctx)})
	}
}

// publish records ks as current and loads it into every listener with
// its policy as configured now, unless that version (or a newer one) is
// already current.
func (m *Manager) publish(ks *keystore.KeySet) error {
	m.pubMu.Lock()
	defer m.pubMu.Unlock()
	p, ok := m.Policy(ks.Name)
	if !ok {
		return fmt.Errorf("%w: %q", ErrUnknownKeySet, ks.Name)
	}
	if old, ok := (*m.current.Load())[ks.Name]; ok && ks.Version != 0 && old.Version >= ks.Version {
		return nil
	}
	return m.publishAll([]keystore.Policy{p}, []*keystore.KeySet{ks})
}

// KeySet returns the current version of a configured key set and its
// policy, from memory.
func (m *Manager) KeySet(name string) (*keystore.KeySet, keystore.Policy, error) {
	ks, ok := (*m.current.Load())[name]
	if !ok {
		return nil, keystore.Policy{}, fmt.Errorf("%w: %q", ErrUnknownKeySet, name)
	}
	p, _ := m.Policy(name)
	return ks, p, nil
}

// Names lists the configured key sets.
func (m *Manager) Names() []string { return slices.Sorted(maps.Keys(m.conf.Load().policies)) }
