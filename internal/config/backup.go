package config

import (
	"fmt"
	"net/url"
	"strings"

	"filippo.io/age"

	"github.com/keyd-dev/keyd/rotation"
)

// Backup makes backups on a schedule (docs/backup.md): a backup of every
// key set and all token state, encrypted to age recipients, into a folder.
type Backup struct {
	Schedule string `yaml:"schedule"` // cron, e.g. "@hourly"; "": no scheduled backups
	// To is where the backups go: a folder (a path, or file:///path), or
	// an object store (s3://bucket/prefix, gs://..., azblob://...).
	To             string   `yaml:"to"`
	Keep           int      `yaml:"keep"`            // how many to keep; default 48
	Recipients     []string `yaml:"recipients"`      // age recipients (age1...)
	RecipientsFile string   `yaml:"recipients_file"` // a file of them, one a line
}

// Folder is the folder of To.
func (b Backup) Folder() string {
	if rest, ok := strings.CutPrefix(b.To, "file://"); ok {
		return rest
	}
	return b.To
}

// validateBackup checks backup: a schedule, a folder, how many to keep and
// the recipients (a recipients_file is read at start and by config check).
func (c *Config) validateBackup(bad func(field, format string, args ...any)) {
	b := c.Backup
	if b.Schedule == "" {
		if b.To != "" || len(b.Recipients) > 0 || b.RecipientsFile != "" {
			bad("backup.schedule", "is required with the other backup settings (e.g. \"@hourly\")")
		}
		return
	}
	if _, err := rotation.ParseSchedule(b.Schedule); err != nil {
		bad("backup.schedule", "%q is not a cron schedule: %v", b.Schedule, err)
	}
	switch u, err := url.Parse(b.To); {
	case b.To == "":
		bad("backup.to", "is required: the folder or bucket the backups go to")
	case err == nil && (u.Scheme == "s3" || u.Scheme == "gs" || u.Scheme == "azblob"):
		if u.Host == "" {
			bad("backup.to", "%q names no bucket: %s://BUCKET/prefix", u.Redacted(), u.Scheme)
		}
		if u.User != nil {
			bad("backup.to", "holds credentials: leave them to the cloud's credential chain (environment, workload identity, profile)")
		}
	case err != nil || (u.Scheme != "" && u.Scheme != "file"):
		bad("backup.to", "%q must be a folder (a path, or file:///path) or a bucket (s3://, gs://, azblob://)", b.To)
	case !strings.HasPrefix(b.Folder(), "/"):
		bad("backup.to", "%q must be an absolute path", b.To)
	}
	if b.Keep < 0 {
		bad("backup.keep", "%d must be 1 or more (default 48)", b.Keep)
	}
	if len(b.Recipients) == 0 && b.RecipientsFile == "" {
		bad("backup.recipients", "at least one age recipient (age1...), here or in backup.recipients_file: backups are encrypted to them")
	}
	for i, r := range b.Recipients {
		if rs, err := age.ParseRecipients(strings.NewReader(r)); err != nil || len(rs) != 1 {
			bad(fmt.Sprintf("backup.recipients[%d]", i), "is not an age recipient (age1... or age1pq1...; an AGE-SECRET-KEY is the identity, which keyd must not hold)")
		}
	}
}
