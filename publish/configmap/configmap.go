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

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/util/retry"

	"github.com/keyd-dev/keyd/publish"
)

// Target writes the data keys of one ConfigMap.
type Target struct {
	cs              kubernetes.Interface
	namespace, name string
}

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
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	return &Target{cs: cs, namespace: ns, name: name}, nil
}

func key(name string) string { return path.Base(name) }

// Put implements publish.Target: the data key of name's base name, the
// ConfigMap made if missing; a concurrent change is retried on fresh
// state. Content type and cache control are not kept (ConfigMaps have
// none).
func (t *Target) Put(ctx context.Context, name string, data []byte, _, _ string) error {
	cms := t.cs.CoreV1().ConfigMaps(t.namespace)
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cm, err := cms.Get(ctx, t.name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			cm = &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: t.name, Namespace: t.namespace,
				Labels: map[string]string{"app.kubernetes.io/managed-by": "keyd"}}, Data: map[string]string{key(name): string(data)}}
			_, err = cms.Create(ctx, cm, metav1.CreateOptions{})
			if apierrors.IsAlreadyExists(err) {
				return apierrors.NewConflict(corev1.Resource("configmaps"), t.name, err)
			}
			return err
		}
		if err != nil {
			return err
		}
		if cm.Data == nil {
			cm.Data = map[string]string{}
		}
		cm.Data[key(name)] = string(data)
		_, err = cms.Update(ctx, cm, metav1.UpdateOptions{})
		return err
	})
}

// Get implements publish.Target.
func (t *Target) Get(ctx context.Context, name string) ([]byte, error) {
	cm, err := t.cs.CoreV1().ConfigMaps(t.namespace).Get(ctx, t.name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("%w: configmap %s/%s", publish.ErrNotFound, t.namespace, t.name)
	}
	if err != nil {
		return nil, err
	}
	v, ok := cm.Data[key(name)]
	if !ok {
		return nil, fmt.Errorf("%w: %s in configmap %s/%s", publish.ErrNotFound, key(name), t.namespace, t.name)
	}
	return []byte(v), nil
}

// Close implements publish.Target.
func (t *Target) Close() error { return nil }
