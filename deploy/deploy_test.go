// Package deploy_test checks the Helm chart of deploy/helm/keyd with a real
// helm: lint --strict, and the objects `helm template` renders for the
// embedded and the Vault modes (the restricted Pod Security profile, the
// probes, the config checksum, and a keyd config that keyd's own parser
// accepts).
package deploy_test

import (
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/keyd-dev/keyd/internal/config"
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
		Name string `yaml:"name"`
	} `yaml:"metadata"`
	Data map[string]string `yaml:"data"`
	Spec struct {
		Replicas *int `yaml:"replicas"`
		Template struct {
			Metadata struct {
				Annotations map[string]string `yaml:"annotations"`
			} `yaml:"metadata"`
			Spec struct {
				AutomountServiceAccountToken *bool `yaml:"automountServiceAccountToken"`
				SecurityContext              struct {
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
			for _, e := range c.Env {
				if e.Value != "" {
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
// socket folder, with the flags the README names.
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
