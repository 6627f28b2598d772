package bucket_test

import (
	"context"
	"strings"
	"testing"

	"github.com/keyd-dev/keyd/internal/bucket"
)

// Bucket URLs: a missing bucket, a prefix given twice, a scheme of no
// driver and a driver's unknown parameter are named; the URL's path is
// the names' prefix.
func TestBucketURLs(t *testing.T) {
	for _, tc := range []struct{ url, want string }{
		{"s3:///site", "no bucket"},
		{"gs://b/site?prefix=x/", "a prefix twice"},
		{"ftp://b/site", `"ftp" is not a bucket scheme`},
		{"s3://b/site?regoin=eu-west-1", `unknown query parameter "regoin"`},
	} {
		if _, err := bucket.Open(context.Background(), tc.url); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Open(%s) = %v; want %q", tc.url, err, tc.want)
		}
	}
	if err := bucket.Check(context.Background(), "s3://b/site?region=eu-west-1"); err != nil {
		t.Fatalf("Check of a good URL: %v", err)
	}
	dir := t.TempDir()
	b, err := bucket.Open(context.Background(), "file://"+dir+"/made")
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if err := b.WriteAll(context.Background(), "x/y", []byte("z"), nil); err != nil {
		t.Fatalf("a folder made on open: %v", err)
	}
}
