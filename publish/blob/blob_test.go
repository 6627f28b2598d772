package blob_test

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/keyd-dev/keyd/publish"
	"github.com/keyd-dev/keyd/publish/blob"
	"github.com/keyd-dev/keyd/publish/publishtest"
)

func TestConformanceFolder(t *testing.T) {
	publishtest.Run(t, func(t *testing.T) publish.Target {
		tg, err := blob.Open(context.Background(), "file://"+filepath.Join(t.TempDir(), "site"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = tg.Close() })
		return tg
	})
}
