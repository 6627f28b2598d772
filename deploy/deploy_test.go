// Package deploy_test checks the Helm chart of deploy/helm/keyd with a real
// helm: lint --strict, and the objects `helm template` renders for the
// embedded and the Vault modes (the restricted Pod Security profile, the
// probes, the config checksum, and a keyd config that keyd's own parser
// accepts); then it applies them, and the control-plane static pod, to a
// real kube-apiserver with a server-side dry run.
package deploy_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/keyd-dev/keyd/internal/config"
	"github.com/keyd-dev/keyd/internal/testkube"
)

func helm(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath("helm")
	if err != nil {
		if os.Getenv("KEYD_REQUIRE_HELM") != "" {
			t.Fatal("helm is required (scripts/deps.sh installs it with go install)")
		}
		t.Skip("no helm on PATH (go install helm.sh/helm/v3/cmd/helm@v3.19.0)")
	}
	return bin
}

type object struct {
	Kind     string `yaml:"kind"`
	Metadata struct {
		Name        string            `yaml:"name"`
		Annotations map[string]string `yaml:"annotations"`
	} `yaml:"metadata"`
	Data map[string]string `yaml:"data"`
	Spec struct {
		Replicas *int `yaml:"replicas"`
		Template struct {
			Metadata struct {
				Annotations map[string]string `yaml:"annotations"`
				Labels      map[string]string `yaml:"labels"`
			} `yaml:"metadata"`
			Spec struct {
				AutomountServiceAccountToken *bool `yaml:"automountServiceAccountToken"`
				Volumes                      []struct {
					Name     string         `yaml:"name"`
					EmptyDir map[string]any `yaml:"emptyDir"`
				} `yaml:"volumes"`
				SecurityContext struct {
					RunAsNonRoot   bool `yaml:"runAsNonRoot"`
					RunAsUser      int  `yaml:"runAsUser"`
					SeccompProfile struct {
						Type string `yaml:"type"`
					} `yaml:"seccompProfile"`
				} `yaml:"securityContext"`
				Containers []struct {
					SecurityContext struct {
						AllowPrivilegeEscalation *bool `yaml:"allowPrivilegeEscalation"`
						ReadOnlyRootFilesystem   bool  `yaml:"readOnlyRootFilesystem"`
						Capabilities             struct {
							Drop []string `yaml:"drop"`
						} `yaml:"capabilities"`
					} `yaml:"securityContext"`
					VolumeMounts []struct {
						Name      string `yaml:"name"`
						MountPath string `yaml:"mountPath"`
					} `yaml:"volumeMounts"`
					LivenessProbe  map[string]any `yaml:"livenessProbe"`
					ReadinessProbe map[string]any `yaml:"readinessProbe"`
					Env            []struct {
						Name  string         `yaml:"name"`
						Value string         `yaml:"value"`
						From  map[string]any `yaml:"valueFrom"`
					} `yaml:"env"`
				} `yaml:"containers"`
			} `yaml:"spec"`
		} `yaml:"template"`
	} `yaml:"spec"`
}

func render(t *testing.T, bin string, set ...string) []object {
	t.Helper()
	args := []string{"lint", "--strict", "helm/keyd"}
	for _, s := range set {
		args = append(args, "--set", s)
	}
	if out, err := exec.Command(bin, args...).CombinedOutput(); err != nil {
		t.Fatalf("helm %v: %v\n%s", args, err, out)
	}
	args = append([]string{"template", "test", "helm/keyd"}, args[3:]...)
	out, err := exec.Command(bin, args...).Output()
	if err != nil {
		t.Fatalf("helm %v: %v", args, err)
	}
	var objs []object
	dec := yaml.NewDecoder(bytes.NewReader(out))
	for {
		var o object
		err := dec.Decode(&o)
		if errors.Is(err, io.EOF) {
			return objs
		}
		if err != nil {
			t.Fatalf("rendered YAML: %v", err)
		}
		if o.Kind != "" {
			objs = append(objs, o)
		}
	}
}

func TestChart(t *testing.T) {
	bin := helm(t)
	for _, mode := range []struct {
		name     string
		set      []string
		workload string
		secret   string // the env var fed from a Secret
	}{
		{"embedded", nil, "StatefulSet", "KEYD_MASTER_KEY"},
		{"vault", []string{"mode=vault", "vault.auth.roleID=keyd-role"}, "Deployment", ""},
		{"vault-token", []string{"mode=vault", "vault.auth.method=token", "tls.existingSecret=keyd-tls", "serviceMonitor.enabled=true", "networkPolicy.enabled=true"}, "Deployment", "VAULT_TOKEN"},
		{"vault-kubernetes", []string{"mode=vault", "vault.auth.method=kubernetes"}, "Deployment", ""},
		{"redis-metrics-clients", []string{"tokenState.redis.url=rediss://redis.keyd.svc:6379/0", "tokenState.redis.existingSecret=keyd-redis",
			"tokenState.redis.caSecret=redis-ca", "tls.existingSecret=keyd-tls", "tls.clientCASecret=client-ca", "config.metrics.listen=:9090"}, "StatefulSet", "KEYD_MASTER_KEY"},
		{"cloud-identity", []string{`serviceAccount.annotations.eks\.amazonaws\.com/role-arn=arn:aws:iam::123456789012:role/keyd`,
			`podLabels.azure\.workload\.identity/use=true`, "extraEnv[0].name=AWS_REGION", "extraEnv[0].value=eu-west-1"}, "StatefulSet", "KEYD_MASTER_KEY"},
	} {
		t.Run(mode.name, func(t *testing.T) {
			objs := render(t, bin, append(mode.set, `config.auth.tokens[0].name=ops`, `config.auth.tokens[0].sha256=0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef`, `config.auth.tokens[0].scopes[0]=admin`)...)
			kinds := map[string]object{}
			for _, o := range objs {
				kinds[o.Kind] = o
			}
			w, ok := kinds[mode.workload]
			if !ok {
				t.Fatalf("no %s among %v", mode.workload, kinds)
			}
			pod := w.Spec.Template.Spec
			c := pod.Containers[0]
			if !pod.SecurityContext.RunAsNonRoot || pod.SecurityContext.RunAsUser != 65532 || pod.SecurityContext.SeccompProfile.Type != "RuntimeDefault" ||
				c.SecurityContext.AllowPrivilegeEscalation == nil || *c.SecurityContext.AllowPrivilegeEscalation || !c.SecurityContext.ReadOnlyRootFilesystem ||
				len(c.SecurityContext.Capabilities.Drop) != 1 || c.SecurityContext.Capabilities.Drop[0] != "ALL" {
				t.Errorf("not the restricted profile: %+v %+v", pod.SecurityContext, c.SecurityContext)
			}
			if c.LivenessProbe == nil || c.ReadinessProbe == nil || w.Spec.Template.Metadata.Annotations["checksum/config"] == "" {
				t.Errorf("probes or config checksum missing")
			}
			tmp := false
			for _, m := range c.VolumeMounts {
				tmp = tmp || m.MountPath == "/tmp" && m.Name == "tmp"
			}
			if !tmp {
				t.Errorf("no writable /tmp for backups' spool under a read-only root: %+v", c.VolumeMounts)
			}
			if mode.name == "cloud-identity" {
				if sa := kinds["ServiceAccount"]; sa.Metadata.Annotations["eks.amazonaws.com/role-arn"] != "arn:aws:iam::123456789012:role/keyd" {
					t.Errorf("service account annotations: %+v", sa.Metadata.Annotations)
				}
				if w.Spec.Template.Metadata.Labels["azure.workload.identity/use"] != "true" {
					t.Errorf("pod labels: %+v", w.Spec.Template.Metadata.Labels)
				}
				if last := c.Env[len(c.Env)-1]; last.Name != "AWS_REGION" || last.Value != "eu-west-1" {
					t.Errorf("extraEnv: %+v", c.Env)
				}
			}
			for _, e := range c.Env {
				if e.Value != "" && e.Name != "AWS_REGION" {
					t.Errorf("env %s has a value in clear", e.Name)
				}
				if e.Name == mode.secret && e.From["secretKeyRef"] == nil {
					t.Errorf("%s is not from a Secret", e.Name)
				}
			}
			cm, ok := kinds["ConfigMap"]
			if !ok {
				t.Fatal("no ConfigMap")
			}
			if _, err := config.Parse(strings.NewReader(cm.Data["keyd.yaml"]), "chart"); err != nil {
				t.Fatalf("the chart's keyd.yaml does not load:\n%s\n%v", cm.Data["keyd.yaml"], err)
			}
			// Secure by default: a NetworkPolicy, and a keyed audit chain
			// whose key comes from a Secret the chart makes.
			if _, ok := kinds["NetworkPolicy"]; !ok {
				t.Errorf("no NetworkPolicy by default")
			}
			if !strings.Contains(cm.Data["keyd.yaml"], "key_file: /etc/keyd/audit/audit.key") {
				t.Errorf("the audit chain is not keyed:\n%s", cm.Data["keyd.yaml"])
			}
			if sec, ok := kinds["Secret"]; !ok || sec.Metadata.Name != "test-keyd-audit-key" {
				t.Errorf("no audit key Secret: %+v", kinds["Secret"])
			}
			if mode.name == "redis-metrics-clients" {
				for _, want := range []string{"backend: redis", "password_file: /etc/keyd/redis/password", "tls_ca_file: /etc/keyd/redis-ca/ca.crt",
					"client_ca_file: /etc/keyd/client-ca/ca.crt", "listen: :9090"} {
					if !strings.Contains(cm.Data["keyd.yaml"], want) {
						t.Errorf("%q missing from the chart's keyd.yaml:\n%s", want, cm.Data["keyd.yaml"])
					}
				}
			}
			if mode.workload == "StatefulSet" && (w.Spec.Replicas == nil || *w.Spec.Replicas != 1) {
				t.Errorf("the embedded store runs more than one replica")
			}
		})
	}
}

// The chart's PrometheusRule holds keyd's alert rules, the same file as
// configs/prometheus-alerts.yaml (a link to it), which promtool checks.
func TestChartAlertRules(t *testing.T) {
	bin := helm(t)
	out, err := exec.Command(bin, "template", "test", "helm/keyd", "--set", "prometheusRule.enabled=true").Output()
	if err != nil {
		t.Fatal(err)
	}
	var rule struct {
		Kind string `yaml:"kind"`
		Spec struct {
			Groups []struct {
				Rules []struct {
					Alert string `yaml:"alert"`
					Expr  string `yaml:"expr"`
				} `yaml:"rules"`
			} `yaml:"groups"`
		} `yaml:"spec"`
	}
	dec := yaml.NewDecoder(bytes.NewReader(out))
	for rule.Kind != "PrometheusRule" {
		rule.Kind = ""
		if err := dec.Decode(&rule); err != nil {
			t.Fatalf("no PrometheusRule rendered: %v", err)
		}
	}
	src, err := os.ReadFile("../configs/prometheus-alerts.yaml")
	if err != nil {
		t.Fatal(err)
	}
	want := strings.Count(string(src), "- alert:")
	if rule.Kind != "PrometheusRule" || len(rule.Spec.Groups) != 1 || len(rule.Spec.Groups[0].Rules) != want || want == 0 {
		t.Fatalf("PrometheusRule: %+v (want %d rules)", rule, want)
	}
	for _, r := range rule.Spec.Groups[0].Rules {
		if r.Alert == "" || r.Expr == "" {
			t.Errorf("rule %+v", r)
		}
	}
}

// The control-plane static pod: keyd beside kube-apiserver on a shared
// socket folder, with the flags docs/kubernetes.md names.
func TestControlPlaneManifest(t *testing.T) {
	raw, err := os.ReadFile("kubernetes/kube-apiserver-keyd.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var pod struct {
		Kind string `yaml:"kind"`
		Spec struct {
			Containers []struct {
				Name         string   `yaml:"name"`
				Command      []string `yaml:"command"`
				Args         []string `yaml:"args"`
				VolumeMounts []struct {
					Name      string `yaml:"name"`
					MountPath string `yaml:"mountPath"`
				} `yaml:"volumeMounts"`
			} `yaml:"containers"`
			Volumes []struct {
				Name     string `yaml:"name"`
				HostPath struct {
					Path string `yaml:"path"`
				} `yaml:"hostPath"`
			} `yaml:"volumes"`
		} `yaml:"spec"`
	}
	if err := yaml.Unmarshal(raw, &pod); err != nil || pod.Kind != "Pod" || len(pod.Spec.Containers) != 2 {
		t.Fatalf("manifest: %+v %v", pod, err)
	}
	mounts := map[string]string{}
	for _, c := range pod.Spec.Containers {
		for _, m := range c.VolumeMounts {
			if m.Name == "keyd-socket" {
				mounts[c.Name] = m.MountPath
			}
		}
		joined := strings.Join(append(c.Command, c.Args...), " ")
		switch c.Name {
		case "kube-apiserver":
			if !strings.Contains(joined, "--service-account-signing-endpoint=/run/keyd/kube.sock") ||
				strings.Contains(joined, "--service-account-key-file=") || strings.Contains(joined, "--service-account-signing-key-file=") {
				t.Errorf("kube-apiserver flags: %s", joined)
			}
		case "keyd":
			if !strings.Contains(joined, "serve --config /etc/keyd/keyd.yaml") {
				t.Errorf("keyd args: %s", joined)
			}
		}
	}
	if mounts["keyd"] != "/run/keyd" || mounts["kube-apiserver"] != "/run/keyd" {
		t.Fatalf("the socket folder is not shared: %v", mounts)
	}
}

// The Prometheus Operator's kinds, registered for the dry run with an open
// schema (the Operator's own CRDs are megabytes of OpenAPI): the API server
// then checks their group, version, kind, names and namespace.
const operatorCRDs = `
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: servicemonitors.monitoring.coreos.com}
spec:
  group: monitoring.coreos.com
  scope: Namespaced
  names: {kind: ServiceMonitor, plural: servicemonitors, singular: servicemonitor, listKind: ServiceMonitorList}
  versions: [{name: v1, served: true, storage: true, schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}}]
---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: prometheusrules.monitoring.coreos.com}
spec:
  group: monitoring.coreos.com
  scope: Namespaced
  names: {kind: PrometheusRule, plural: prometheusrules, singular: prometheusrule, listKind: PrometheusRuleList}
  versions: [{name: v1, served: true, storage: true, schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}}]
`

// TestChartOnAnAPIServer applies every object the chart renders, in each
// mode with every option on, to a real kube-apiserver with a server-side
// dry run, in a namespace labelled pod-security.kubernetes.io/enforce and
// warn: restricted. The API server validates each object (schemas, field
// names, references between fields) and warns of any pod template below
// the restricted level; the workload's pod template is also submitted as
// a Pod, which the restricted level's admission refuses outright if it
// falls short (a privileged pod is, as a control).
func TestChartOnAnAPIServer(t *testing.T) {
	bin := helm(t)
	kube := testkube.Start(t, testkube.Options{})
	ns := map[string]any{"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": "keyd", "labels": map[string]string{
		"pod-security.kubernetes.io/enforce": "restricted", "pod-security.kubernetes.io/warn": "restricted"}}}
	if status, body := kube.Do(t, "POST", "/api/v1/namespaces", ns); status != 201 {
		t.Fatalf("namespace: %d %s", status, body)
	}
	// The namespace's default service account, which kube-controller-manager
	// (not run here) would make: admission looks a pod's up.
	for _, sa := range []string{"default"} {
		if status, body := kube.Do(t, "POST", "/api/v1/namespaces/keyd/serviceaccounts", map[string]any{"metadata": map[string]any{"name": sa}}); status != 201 {
			t.Fatalf("service account %s: %d %s", sa, status, body)
		}
	}
	if out, err := kube.Kubectl(t, operatorCRDs, "apply", "-f", "-"); err != nil {
		t.Fatalf("CRDs: %v\n%s", err, out)
	}
	if out, err := kube.Kubectl(t, "", "wait", "--for", "condition=established", "--timeout=60s", "crd/servicemonitors.monitoring.coreos.com", "crd/prometheusrules.monitoring.coreos.com"); err != nil {
		t.Fatalf("CRDs not established: %v\n%s", err, out)
	}
	token := []string{`config.auth.tokens[0].name=ops`, `config.auth.tokens[0].sha256=0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef`, `config.auth.tokens[0].scopes[0]=admin`}
	all := []string{"serviceMonitor.enabled=true", "prometheusRule.enabled=true", "networkPolicy.enabled=true", "tls.existingSecret=keyd-tls"}
	for _, mode := range []struct {
		name string
		set  []string
	}{
		{"embedded", all},
		{"vault-approle", append([]string{"mode=vault", "vault.auth.roleID=keyd-role"}, all...)},
		{"vault-token", append([]string{"mode=vault", "vault.auth.method=token"}, all...)},
		{"vault-kubernetes", append([]string{"mode=vault", "vault.auth.method=kubernetes"}, all...)},
	} {
		t.Run(mode.name, func(t *testing.T) {
			args := []string{"template", "keyd", "helm/keyd", "--namespace", "keyd"}
			for _, s := range append(mode.set, token...) {
				args = append(args, "--set", s)
			}
			rendered, err := exec.Command(bin, args...).Output()
			if err != nil {
				t.Fatalf("helm template: %v", err)
			}
			out, err := kube.Kubectl(t, string(rendered), "apply", "--dry-run=server", "--namespace", "keyd", "-f", "-")
			if err != nil || strings.Contains(out, "Warning") {
				t.Fatalf("the API server refused or warned about the chart's objects: %v\n%s", err, out)
			}
			for _, kind := range []string{"configmap", "service", "serviceaccount", "poddisruptionbudget", "networkpolicy", "servicemonitor", "prometheusrule"} {
				if !strings.Contains(out, kind) {
					t.Errorf("no %s among the applied objects:\n%s", kind, out)
				}
			}
			// The workload's pod template, as a Pod: enforced, not only warned.
			dec := yaml.NewDecoder(bytes.NewReader(rendered))
			for {
				var o map[string]any
				if err := dec.Decode(&o); errors.Is(err, io.EOF) {
					t.Fatal("no workload rendered")
				} else if err != nil {
					t.Fatal(err)
				}
				if o["kind"] != "StatefulSet" && o["kind"] != "Deployment" {
					continue
				}
				spec := o["spec"].(map[string]any)
				podSpec := spec["template"].(map[string]any)["spec"].(map[string]any)
				// A StatefulSet's claims become volumes of its pods.
				claims, _ := spec["volumeClaimTemplates"].([]any)
				for _, c := range claims {
					name := c.(map[string]any)["metadata"].(map[string]any)["name"]
					volumes, _ := podSpec["volumes"].([]any)
					podSpec["volumes"] = append(volumes, map[string]any{"name": name, "persistentVolumeClaim": map[string]any{"claimName": fmt.Sprint(name, "-keyd-0")}})
				}
				// The chart's service account, which the dry run did not make.
				if status, body := kube.Do(t, "POST", "/api/v1/namespaces/keyd/serviceaccounts", map[string]any{"metadata": map[string]any{"name": "keyd-keyd"}}); status != 201 {
					t.Fatalf("service account: %d %s", status, body)
				}
				pod := map[string]any{"apiVersion": "v1", "kind": "Pod", "metadata": map[string]any{"name": "keyd-pod-template"}, "spec": podSpec}
				status, body := kube.Do(t, "POST", "/api/v1/namespaces/keyd/pods?dryRun=All", pod)
				kube.Do(t, "DELETE", "/api/v1/namespaces/keyd/serviceaccounts/keyd-keyd", nil) // the next mode's apply makes it anew
				if status != 201 {
					t.Fatalf("the %s's pod template as a Pod: %d %s", o["kind"], status, body)
				}
				break
			}
		})
	}
	// The control-plane static pod is a valid Pod too (as the kubelet
	// mirrors it; kube-system has no Pod Security label).
	raw, err := os.ReadFile("kubernetes/kube-apiserver-keyd.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var static map[string]any
	if err := yaml.Unmarshal(raw, &static); err != nil {
		t.Fatal(err)
	}
	if status, body := kube.Do(t, "POST", "/api/v1/namespaces", map[string]any{"metadata": map[string]any{"name": "kube-system"}}); status != 201 && status != 409 {
		t.Fatalf("kube-system: %d %s", status, body) // the API server makes it soon after start; whichever comes first
	}
	if status, body := kube.Do(t, "POST", "/api/v1/namespaces/kube-system/serviceaccounts", map[string]any{"metadata": map[string]any{"name": "default"}}); status != 201 {
		t.Fatalf("kube-system's service account: %d %s", status, body)
	}
	if status, body := kube.Do(t, "POST", "/api/v1/namespaces/kube-system/pods?dryRun=All", static); status != 201 {
		t.Fatalf("the control-plane static pod: %d %s", status, body)
	}
	// A control: a pod with the defaults (root allowed, capabilities kept,
	// no seccomp profile) is refused in that namespace.
	plain := map[string]any{"apiVersion": "v1", "kind": "Pod", "metadata": map[string]any{"name": "plain"},
		"spec": map[string]any{"containers": []any{map[string]any{"name": "c", "image": "busybox"}}}}
	if status, body := kube.Do(t, "POST", "/api/v1/namespaces/keyd/pods?dryRun=All", plain); status != 403 || !strings.Contains(string(body), "violates PodSecurity") || !strings.Contains(string(body), "restricted:latest") {
		t.Fatalf("a pod with the defaults in the restricted namespace: %d %s", status, body)
	}
}
