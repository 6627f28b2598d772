package daemon

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"

	"github.com/keyd-dev/keyd/audit"
	"github.com/keyd-dev/keyd/internal/config"
	"github.com/keyd-dev/keyd/metrics"
	"github.com/keyd-dev/keyd/rotation"
)

// auditRotation records key set changes (rotation.Options.Events) in the
// audit trail: created, rotated (with its trigger), revoked, destroyed.
// It is part of the wiring so that audit imports nothing of rotation.
func auditRotation(l *audit.Log) func(rotation.Event) {
	return func(e rotation.Event) {
		l.Note(audit.Record{
			Time: e.Time, Event: string(e.Kind), KeySet: e.KeySet, KID: e.KID,
			Pending: e.Pending, Trigger: e.Trigger, Actor: e.Actor, JTI: e.JTI, Reason: e.Reason,
			Sub: subjectClaim(e.Subject),
		})
	}
}

// subjectClaim is a revoked subject as the audit trail keeps claims.
func subjectClaim(s string) []byte {
	if s == "" {
		return nil
	}
	b, _ := json.Marshal(s)
	return audit.Claim(b)
}

// openAuditLog opens the audit trail the config names (and the metrics it
// counts into) and records the config loaded.
func (d *daemon) openAuditLog(context.Context) error {
	if d.cfg.Metrics.On() {
		d.met = metrics.New()
	}
	l, err := openAudit(d.cfg.Audit, d.met, d.log)
	if err != nil {
		return err
	}
	d.auditLog = l
	d.closers = append(d.closers, func() {
		if err := l.Close(); err != nil {
			d.log.Error("closing the audit trail", "err", err)
		}
	})
	l.Note(audit.Record{Event: audit.EventConfigLoaded, Detail: configDetail(d.o.ConfigPath, d.cfg)})
	return nil
}

func openAudit(ac config.Audit, met *metrics.Metrics, log *slog.Logger) (*audit.Log, error) {
	if ac.Path == "" {
		return nil, nil
	}
	o := audit.Options{
		Path: ac.Path, Required: ac.Required, Written: met.AuditWritten,
		Failed: func(err error) {
			met.AuditFailed()
			log.Error("audit records could not be written", "err", err, "required", ac.Required)
		},
	}
	if ac.KeyFile != "" {
		key, err := audit.ReadKeyFile(ac.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("audit.key_file: %w", err)
		}
		// The daemon's log is a second place holding the trail to its
		// checkpoints: records cut from the trail's end show against them.
		o.Key, o.Checkpoint = key, func(seq uint64, mac string) {
			log.Info("audit checkpoint", "seq", seq, "hmac", mac)
		}
	}
	l, err := audit.Open(o)
	if err != nil {
		return nil, err
	}
	log.Info("audit trail", "path", ac.Path, "required", ac.Required, "keyed", ac.KeyFile != "")
	return l, nil
}

// configDetail describes a loaded config for the audit trail: where it
// came from and what it serves, nothing secret.
func configDetail(path string, cfg *config.Config) string {
	if path == "" {
		path = "embedded default"
	}
	names := make([]string, len(cfg.KeySets))
	for i, ks := range cfg.KeySets {
		names[i] = ks.Name
	}
	return fmt.Sprintf("%s; keysets %s; %d API tokens; backend %s", path, strings.Join(names, ","), len(cfg.Auth.Tokens), cfg.Storage.Backend)
}
