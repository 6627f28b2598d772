package configmap_test

import (
	"fmt"
	"testing"

	"github.com/keyd-dev/keyd/internal/testkube"
	"github.com/keyd-dev/keyd/publish"
	"github.com/keyd-dev/keyd/publish/configmap"
	"github.com/keyd-dev/keyd/publish/publishtest"
)

// The conformance suite on a real kube-apiserver: each target its own
// ConfigMap in the default namespace.
func TestConformance(t *testing.T) {
	srv := testkube.Start(t, testkube.Options{})
	n := 0
	publishtest.Run(t, func(t *testing.T) publish.Target {
		n++
		tg, err := configmap.Open(fmt.Sprintf("kubernetes://default/keyd-jwks-%d", n), srv.Kubeconfig)
		if err != nil {
			t.Fatal(err)
		}
		return tg
	})
}

func TestParse(t *testing.T) {
	for _, bad := range []string{"kubernetes://default", "kubernetes:///name", "kubernetes://ns/a/b", "s3://bucket/x"} {
		if _, _, err := configmap.Parse(bad); err == nil {
			t.Errorf("%s parsed", bad)
		}
	}
	if ns, name, err := configmap.Parse("kubernetes://kube-public/oidc"); err != nil || ns != "kube-public" || name != "oidc" {
		t.Fatalf("Parse = %s %s %v", ns, name, err)
	}
}
