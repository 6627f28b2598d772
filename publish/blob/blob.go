// Package blob is the publishing target of a gocloud.dev/blob bucket: a
// folder (file:///dir, each file written to a temporary name and renamed,
// for an nginx or CDN origin), S3 and S3-compatible stores (s3://), Google
// Cloud Storage (gs://) and Azure Blob Storage (azblob://), each with its
// cloud's default credential chain. It is a package of its own, one engine
// of publish.Target. The three cloud drivers are in every build but one
// that leaves one out by tag (keyd_no_s3, keyd_no_gcs, keyd_no_azure): they
// are most of keyd's size.
package blob

import (
	"context"
	"fmt"
	"net/url"
	"strings"

	"gocloud.dev/blob"
	_ "gocloud.dev/blob/fileblob" // file://, always
	"gocloud.dev/gcerrors"

	"github.com/keyd-dev/keyd/publish"
)

// Target writes into a bucket.
type Target struct {
	b *blob.Bucket
}

var _ publish.Target = (*Target)(nil)

// drivers are the object store schemes this build has (driver_*.go).
var drivers = map[string]bool{"file": true}

// tags name the build tag that leaves each cloud driver out.
var tags = map[string]string{"s3": "keyd_no_s3", "gs": "keyd_no_gcs", "azblob": "keyd_no_azure"}

// Built fails when this keyd was built without the driver of scheme.
func Built(scheme string) error {
	if drivers[scheme] {
		return nil
	}
	if tag, ok := tags[scheme]; ok {
		return fmt.Errorf("this keyd was built without %s:// (build tag %s): use a build without that tag", scheme, tag)
	}
	return fmt.Errorf("%q is not a bucket scheme (want file, s3, gs or azblob)", scheme)
}

// bucketURL is gocloud.dev's URL of rawURL. A file:// folder is made if
// missing (0700) and its files are written beside their final names, so a
// rename puts them in place whole. An object store's path is the prefix
// of the files' names (s3://bucket/some/prefix, as the cloud CLIs write
// it): gocloud.dev's prefix parameter.
func bucketURL(rawURL string) (*url.URL, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, err
	}
	if err := Built(u.Scheme); err != nil {
		return nil, err
	}
	q := u.Query()
	if u.Scheme == "file" {
		q.Set("create_dir", "1")
		q.Set("dir_file_mode", "0700")
		q.Set("no_tmp_dir", "1")
	} else {
		if u.Host == "" {
			return nil, fmt.Errorf("%s: no bucket: want %s://BUCKET/prefix", u.Redacted(), u.Scheme)
		}
		if prefix := strings.Trim(u.Path, "/"); prefix != "" {
			if q.Has("prefix") {
				return nil, fmt.Errorf("%s: a prefix twice, in the path and in ?prefix=", u.Redacted())
			}
			q.Set("prefix", prefix+"/")
		}
		u.Path = ""
	}
	u.RawQuery = q.Encode()
	return u, nil
}

// Check opens and closes the object store bucket of rawURL, which does no
// I/O: this build has its driver, and the driver takes the URL's
// parameters. Folders (made by Open) and other schemes pass.
func Check(ctx context.Context, rawURL string) error {
	u, err := url.Parse(rawURL)
	if err != nil || u.Scheme == "file" || tags[u.Scheme] == "" {
		return nil // the config's own checks name it
	}
	t, err := Open(ctx, rawURL)
	if err != nil {
		return err
	}
	return t.Close()
}

// Open opens the bucket of rawURL (bucketURL). It does no I/O for any
// scheme: a bucket that is not there, or refused credentials, show at the
// first write.
func Open(ctx context.Context, rawURL string) (*Target, error) {
	u, err := bucketURL(rawURL)
	if err != nil {
		return nil, err
	}
	b, err := blob.OpenBucket(ctx, u.String())
	if err != nil {
		return nil, err // gocloud.dev names the bucket and what it refused
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
