// Package blob is the publishing target of a gocloud.dev/blob bucket: a
// folder (file:///dir, each file written to a temporary name and renamed,
// for an nginx or CDN origin), and the object stores gocloud.dev opens by
// URL once their drivers are linked in. It is a package of its own, one
// engine of publish.Target.
package blob

import (
	"context"
	"fmt"
	"net/url"

	"gocloud.dev/blob"
	_ "gocloud.dev/blob/fileblob" // file://
	"gocloud.dev/gcerrors"

	"github.com/keyd-dev/keyd/publish"
)

// Target writes into a bucket.
type Target struct {
	b *blob.Bucket
}

var _ publish.Target = (*Target)(nil)

// Open opens the bucket of rawURL. A file:// folder is made if missing
// (0700) and its files are written beside their final names, so a rename
// puts them in place whole.
func Open(ctx context.Context, rawURL string) (*Target, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, err
	}
	if u.Scheme == "file" {
		q := u.Query()
		q.Set("create_dir", "1")
		q.Set("dir_file_mode", "0700")
		q.Set("no_tmp_dir", "1")
		u.RawQuery = q.Encode()
	}
	b, err := blob.OpenBucket(ctx, u.String())
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", u.Redacted(), err)
	}
	return &Target{b: b}, nil
}

// Put implements publish.Target.
func (t *Target) Put(ctx context.Context, name string, data []byte, contentType, cacheControl string) error {
	return t.b.WriteAll(ctx, name, data, &blob.WriterOptions{ContentType: contentType, CacheControl: cacheControl})
}

// Get implements publish.Target.
func (t *Target) Get(ctx context.Context, name string) ([]byte, error) {
	data, err := t.b.ReadAll(ctx, name)
	if gcerrors.Code(err) == gcerrors.NotFound {
		return nil, fmt.Errorf("%w: %s", publish.ErrNotFound, name)
	}
	return data, err
}

// Attributes returns what the bucket keeps of a file besides its bytes
// (tests check the content type and cache control).
func (t *Target) Attributes(ctx context.Context, name string) (*blob.Attributes, error) {
	return t.b.Attributes(ctx, name)
}

// Close implements publish.Target.
func (t *Target) Close() error { return t.b.Close() }
