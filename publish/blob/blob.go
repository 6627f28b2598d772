// Package blob is the publishing target of a gocloud.dev/blob bucket: a
// folder (file:///dir, each file written to a temporary name and renamed,
// for an nginx or CDN origin), S3 and S3-compatible stores (s3://), Google
// Cloud Storage (gs://) and Azure Blob Storage (azblob://), each with its
// cloud's default credential chain. It is a package of its own, one engine
// of publish.Target; internal/bucket opens the buckets.
package blob

import (
	"context"
	"fmt"

	"gocloud.dev/blob"
	"gocloud.dev/gcerrors"

	"github.com/keyd-dev/keyd/internal/bucket"
	"github.com/keyd-dev/keyd/publish"
)

// Target writes into a bucket.
type Target struct {
	b *blob.Bucket
}

var _ publish.Target = (*Target)(nil)

// Open opens the bucket of rawURL (internal/bucket's rules). It does no
// I/O for an object store: a bucket that is not there, or refused
// credentials, show at the first write.
func Open(ctx context.Context, rawURL string) (*Target, error) {
	b, err := bucket.Open(ctx, rawURL)
	if err != nil {
		return nil, err
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

// Headers returns the content type and cache control the bucket serves
// name with (publishtest checks them).
func (t *Target) Headers(ctx context.Context, name string) (contentType, cacheControl string, err error) {
	a, err := t.b.Attributes(ctx, name)
	if err != nil {
		return "", "", err
	}
	return a.ContentType, a.CacheControl, nil
}

// Close implements publish.Target.
func (t *Target) Close() error { return t.b.Close() }
