// Package configmap is the publishing target of a Kubernetes ConfigMap
// (kubernetes://namespace/name): each file one data key, named by the
// file's base name (jwks.json, openid-configuration), for workloads that
// mount the keys or a sidecar that serves them. It talks to the API server
// with k8s.io/client-go: in the cluster with the pod's service account, or
// with a kubeconfig. It is a package of its own, one engine of
// publish.Target.
package configmap

import (
	"context"
	"fmt"
	"net/url"
	"path"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/util/retry"

	"github.com/keyd-dev/keyd/publish"
)

// Target writes the data keys of one ConfigMap.
type Target struct {
	// ConfigMaps through the dynamic client: the typed core client's
	// generated types would add some 22 MB to keyd's binary for one
	// object kind.
	cms             dynamic.ResourceInterface
	namespace, name string
}

var configMaps = schema.GroupVersionResource{Version: "v1", Resource: "configmaps"}

var _ publish.Target = (*Target)(nil)

// Parse splits kubernetes://namespace/name.
func Parse(rawURL string) (namespace, name string, err error) {
	u, err := url.Parse(rawURL)
	if err != nil || u.Scheme != "kubernetes" || u.Host == "" || strings.Trim(u.Path, "/") == "" || strings.Contains(strings.Trim(u.Path, "/"), "/") {
		return "", "", fmt.Errorf("%q is not kubernetes://NAMESPACE/CONFIGMAP", rawURL)
	}
	return u.Host, strings.Trim(u.Path, "/"), nil
}

// Open connects to the API server: with kubeconfig when given, else in
// the cluster (the pod's service account, which needs get, create and
// update on that ConfigMap).
func Open(rawURL, kubeconfig string) (*Target, error) {
	ns, name, err := Parse(rawURL)
	if err != nil {
		return nil, err
	}
	var cfg *rest.Config
	if kubeconfig != "" {
		cfg, err = clientcmd.BuildConfigFromFlags("", kubeconfig)
	} else {
		cfg, err = rest.InClusterConfig()
	}
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	cfg.UserAgent = "keyd-publisher"
	c, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	return &Target{cms: c.Resource(configMaps).Namespace(ns), namespace: ns, name: name}, nil
}

func key(name string) string { return path.Base(name) }

// Put implements publish.Target: the data key of name's base name, the
// ConfigMap made if missing; a concurrent change is retried on fresh
// state. Content type and cache control are not kept (ConfigMaps have
// none).
func (t *Target) Put(ctx context.Context, name string, data []byte, _, _ string) error {
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cm, err := t.cms.Get(ctx, t.name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			cm = &unstructured.Unstructured{Object: map[string]any{
				"apiVersion": "v1", "kind": "ConfigMap",
				"metadata": map[string]any{"name": t.name, "namespace": t.namespace,
					"labels": map[string]any{"app.kubernetes.io/managed-by": "keyd"}},
				"data": map[string]any{key(name): string(data)},
			}}
			_, err = t.cms.Create(ctx, cm, metav1.CreateOptions{})
			if apierrors.IsAlreadyExists(err) {
				return apierrors.NewConflict(configMaps.GroupResource(), t.name, err)
			}
			return err
		}
		if err != nil {
			return err
		}
		if err := unstructured.SetNestedField(cm.Object, string(data), "data", key(name)); err != nil {
			return err
		}
		_, err = t.cms.Update(ctx, cm, metav1.UpdateOptions{})
		return err
	})
}

// Get implements publish.Target.
func (t *Target) Get(ctx context.Context, name string) ([]byte, error) {
	cm, err := t.cms.Get(ctx, t.name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("%w: configmap %s/%s", publish.ErrNotFound, t.namespace, t.name)
	}
	if err != nil {
		return nil, err
	}
	v, ok, err := unstructured.NestedString(cm.Object, "data", key(name))
	if err != nil || !ok {
		return nil, fmt.Errorf("%w: %s in configmap %s/%s", publish.ErrNotFound, key(name), t.namespace, t.name)
	}
	return []byte(v), nil
}

// Close implements publish.Target.
func (t *Target) Close() error { return nil }
