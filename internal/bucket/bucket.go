// Package bucket opens the buckets keyd writes to by URL, with one set of
// rules for every use (publishing targets, scheduled backups): a folder
// (file:///dir) or an object store (s3://, gs://, azblob://) through
// gocloud.dev/blob and its drivers, with each cloud's default credential
// chain; the path of an object store URL is the prefix of the names. It
// is a package of its own because the drivers are most of keyd's size and
// of its build: they are linked here once, and a build can leave one out
// by tag (keyd_no_s3, keyd_no_gcs, keyd_no_azure).
package bucket

import (
	"context"
	"fmt"
	"net/url"
	"strings"

	"gocloud.dev/blob"
	_ "gocloud.dev/blob/fileblob" // file://, always
)

// drivers are the schemes this build has (driver_*.go add theirs).
var drivers = map[string]bool{"file": true}

// tags name the build tag that leaves each cloud driver out.
var tags = map[string]string{"s3": "keyd_no_s3", "gs": "keyd_no_gcs", "azblob": "keyd_no_azure"}

// IsObjectStore reports whether rawURL names an object store (s3, gs or
// azblob), whether or not this build has its driver.
func IsObjectStore(rawURL string) bool {
	u, err := url.Parse(rawURL)
	return err == nil && tags[u.Scheme] != ""
}

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

// gocloudURL is gocloud.dev's URL of rawURL. A file:// folder is made if
// missing (0700) and its files are written beside their final names, so a
// rename puts them in place whole. An object store's path is the prefix
// of the names (s3://bucket/some/prefix, as the cloud CLIs write it):
// gocloud.dev's prefix parameter.
func gocloudURL(rawURL string) (*url.URL, error) {
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

// Open opens the bucket of rawURL. It does no I/O for any scheme but
// file (whose folder it makes): a bucket that is not there, or refused
// credentials, show at the first request.
func Open(ctx context.Context, rawURL string) (*blob.Bucket, error) {
	u, err := gocloudURL(rawURL)
	if err != nil {
		return nil, err
	}
	return blob.OpenBucket(ctx, u.String()) // its errors name the bucket and what it refused
}

// Check opens and closes the object store bucket of rawURL, which does no
// I/O: this build has its driver, and the driver takes the URL's
// parameters. Folders and other schemes pass (their own checks name them).
func Check(ctx context.Context, rawURL string) error {
	if !IsObjectStore(rawURL) {
		return nil
	}
	b, err := Open(ctx, rawURL)
	if err != nil {
		return err
	}
	return b.Close()
}
