package vault

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"

	vault "github.com/hashicorp/vault/api"

	"github.com/keyd-dev/keyd/keystore"
)

var _ keystore.RecordStore = (*Store)(nil)

// Records live at <prefix>/records/<kind>/<id> with KV v2 check-and-set,
// their data base64 in a "data" field (Vault encrypts its storage).

func (s *Store) recordPath(kind, id string) string { return s.prefix + "/records/" + kind + "/" + id }

// GetRecord implements keystore.RecordStore.
func (s *Store) GetRecord(ctx context.Context, kind, id string) (*keystore.Record, error) {
	if err := s.ready(); err != nil {
		return nil, err
	}
	sec, err := s.kv.Get(ctx, s.recordPath(kind, id))
	if errors.Is(err, vault.ErrSecretNotFound) || (err == nil && sec.Data == nil) {
		return nil, fmt.Errorf("%w: %s %s", keystore.ErrNotFound, kind, id)
	}
	if err != nil {
		return nil, s.wrap(err)
	}
	enc, _ := sec.Data["data"].(string)
	data, err := base64.StdEncoding.DecodeString(enc)
	if err != nil {
		return nil, fmt.Errorf("%w: record %s %s: %v", keystore.ErrCorrupt, kind, id, err)
	}
	return &keystore.Record{ID: id, Data: data, Version: uint64(sec.VersionMetadata.Version)}, nil
}

// PutRecord implements keystore.RecordStore with check-and-set.
func (s *Store) PutRecord(ctx context.Context, kind string, r *keystore.Record) (*keystore.Record, error) {
	if err := s.ready(); err != nil {
		return nil, err
	}
	if kind == "" || r.ID == "" || strings.Contains(kind+r.ID, "/") {
		return nil, errors.New("a record needs a kind and an id without '/'")
	}
	path := s.recordPath(kind, r.ID)
	sec, err := s.kv.Put(ctx, path, map[string]any{"data": base64.StdEncoding.EncodeToString(r.Data)}, vault.WithCheckAndSet(int(r.Version)))
	if err != nil {
		if isCASMismatch(err) {
			return nil, fmt.Errorf("%w: record %s %s changed since version %d", keystore.ErrConflict, kind, r.ID, r.Version)
		}
		return nil, s.wrap(err)
	}
	if r.Version == 0 { // once, at creation: keep one version, require check-and-set
		if err := s.kv.PutMetadata(ctx, path, vault.KVMetadataPutInput{CASRequired: true, MaxVersions: 1}); err != nil {
			s.log.Warn("could not set cas_required and max_versions on a record's Vault metadata", "kind", kind, "err", err)
		}
	}
	return &keystore.Record{ID: r.ID, Data: append([]byte(nil), r.Data...), Version: uint64(sec.VersionMetadata.Version)}, nil
}

// DeleteRecord implements keystore.RecordStore: every version and the
// metadata go.
func (s *Store) DeleteRecord(ctx context.Context, kind, id string) error {
	if err := s.ready(); err != nil {
		return err
	}
	if err := s.kv.DeleteMetadata(ctx, s.recordPath(kind, id)); err != nil && !errors.Is(err, vault.ErrSecretNotFound) {
		return s.wrap(err)
	}
	return nil
}

// ListRecords implements keystore.RecordStore.
func (s *Store) ListRecords(ctx context.Context, kind string) ([]*keystore.Record, error) {
	if err := s.ready(); err != nil {
		return nil, err
	}
	sec, err := s.client.Logical().ListWithContext(ctx, s.mount+"/metadata/"+s.prefix+"/records/"+kind)
	if err != nil {
		return nil, s.wrap(err)
	}
	var out []*keystore.Record
	if sec == nil {
		return nil, nil
	}
	keys, _ := sec.Data["keys"].([]any)
	for _, k := range keys {
		id, ok := k.(string)
		if !ok || strings.HasSuffix(id, "/") {
			continue
		}
		r, err := s.GetRecord(ctx, kind, id)
		if errors.Is(err, keystore.ErrNotFound) { // deleted meanwhile
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, nil
}
