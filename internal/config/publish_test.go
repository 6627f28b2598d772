package config_test

import (
	"strings"
	"testing"

	"github.com/keyd-dev/keyd/internal/config"
)

// TestPublishChecked: every publishing target's problem is named with its
// path; a good one loads.
func TestPublishChecked(t *testing.T) {
	base := `keysets:
  - {name: es, algorithm: ES256}
  - {name: hs, algorithm: HS256}
publish:
`
	good := base + `  - {name: bucket, to: "file:///srv/oidc", keysets: [es], issuer: "https://oidc.example.com/cluster", required: true, max_keys: 90, algorithms: [ES256]}
  - {name: cm, to: "kubernetes://kube-public/keyd-jwks", keysets: [es], jwks_path: openid/v1/jwks}
`
	good += `  - {name: s3, to: "s3://bucket/jwks?region=eu-west-1", keysets: [es], files: [jwks, discovery], issuer: "https://bucket.s3.eu-west-1.amazonaws.com/jwks"}
  - {name: gcs, to: "gs://bucket", keysets: [es]}
  - {name: azure, to: "azblob://container/site", keysets: [es], files: [discovery], issuer: "http://127.0.0.1:10000/devstoreaccount1/container/site"}
`
	cfg, err := config.Parse(strings.NewReader(good), "t")
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.Publish[0].PublishFiles(); len(got) != 2 || cfg.Publish[1].PublishFiles()[0] != "jwks" {
		t.Fatalf("files %v", got)
	}
	bad := base + `  - {name: bucket, to: "s3:///p?region=x", keysets: [es]}
  - {name: bucket, to: "file://relative/dir", keysets: [hs, nope], files: [jwks, denylist]}
  - {name: x, to: "kubernetes://ns", keysets: [es], files: [discovery], issuer: "http://a/", interval: 1s, max_keys: -1, algorithms: [HS256], jwks_path: /abs, required: true}
`
	_, err = config.Parse(strings.NewReader(bad), "t")
	if err == nil {
		t.Fatal("bad publish targets loaded")
	}
	for _, want := range []string{
		"publish[0].to: \"s3:///p?region=x\" names no bucket",
		"publish[1].name: \"bucket\" is used by another target",
		"publish[1].to: \"file://relative/dir\" must be file:///absolute/folder",
		"publish[1].keysets[0]: \"hs\" is HS256: HMAC keys are secrets and never published",
		"publish[1].keysets[1]: \"nope\" is not a configured key set",
		"publish[1].files[1]: \"denylist\" is not jwks, discovery or revocations",
		"publish[2].to: \"kubernetes://ns\" must be kubernetes://NAMESPACE/CONFIGMAP",
		"publish[2].issuer:",
		"publish[2].required: needs jwks among files",
		"publish[2].interval: 1s is too short",
		"publish[2].max_keys: -1",
		"publish[2].algorithms[0]: \"HS256\" is not a published algorithm",
		"publish[2].jwks_path: \"/abs\" must be a relative path",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("missing %q in:\n%v", want, err)
		}
	}
}
