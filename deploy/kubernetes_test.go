package deploy

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"

	"github.com/strangler-proxy/strangler/config"
)

var update = flag.Bool("update", false, "rewrite kubernetes/prometheusrule.yaml from dashboards/prometheus/*.yml")

const (
	k8sDir = "kubernetes"
	// configMount is where the Deployment mounts the ConfigMap, and
	// configFile the file strangler serve is given.
	configMount = "/etc/strangler"
	configFile  = configMount + "/strangler.yaml"
)

// ruleFiles are the Prometheus rule files the PrometheusRule is built
// from, in its order of groups.
var ruleFiles = []string{"../dashboards/prometheus/rules.yml", "../dashboards/prometheus/recording.yml"}

// decodeStrict decodes a YAML file into v, failing on any field v does not
// have (a misspelt key would otherwise be dropped without a word by the
// API server's older clients, or refused by a newer one at apply time).
func decodeStrict(t *testing.T, path string, v any) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.UnmarshalStrict(data, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// kustomization is the part of kustomize's Kustomization this base uses.
type kustomization struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Labels     []struct {
		Pairs            map[string]string `json:"pairs"`
		IncludeSelectors bool              `json:"includeSelectors"`
	} `json:"labels"`
	Resources          []string `json:"resources"`
	ConfigMapGenerator []struct {
		Name  string   `json:"name"`
		Files []string `json:"files"`
	} `json:"configMapGenerator"`
	GeneratorOptions struct {
		DisableNameSuffixHash bool `json:"disableNameSuffixHash"`
	} `json:"generatorOptions"`
	Images []struct {
		Name    string `json:"name"`
		NewName string `json:"newName"`
		NewTag  string `json:"newTag"`
	} `json:"images"`
}

// serviceMonitor is the part of monitoring.coreos.com/v1 ServiceMonitor
// this base uses.
type serviceMonitor struct {
	APIVersion string             `json:"apiVersion"`
	Kind       string             `json:"kind"`
	Metadata   objectMeta         `json:"metadata"`
	Spec       serviceMonitorSpec `json:"spec"`
}

type objectMeta struct {
	Name   string            `json:"name"`
	Labels map[string]string `json:"labels"`
}

type serviceMonitorSpec struct {
	Selector struct {
		MatchLabels map[string]string `json:"matchLabels"`
	} `json:"selector"`
	Endpoints []struct {
		Port          string `json:"port"`
		Path          string `json:"path"`
		Interval      string `json:"interval"`
		ScrapeTimeout string `json:"scrapeTimeout"`
	} `json:"endpoints"`
}

// prometheusRule is monitoring.coreos.com/v1 PrometheusRule, as far as
// this base uses it; ruleGroups is also the shape of a Prometheus rule
// file.
type prometheusRule struct {
	APIVersion string     `json:"apiVersion"`
	Kind       string     `json:"kind"`
	Metadata   objectMeta `json:"metadata"`
	Spec       ruleGroups `json:"spec"`
}

type ruleGroups struct {
	Groups []struct {
		Name     string `json:"name"`
		Interval string `json:"interval,omitempty"`
		Rules    []struct {
			Alert       string            `json:"alert,omitempty"`
			Record      string            `json:"record,omitempty"`
			Expr        string            `json:"expr"`
			For         string            `json:"for,omitempty"`
			Labels      map[string]string `json:"labels,omitempty"`
			Annotations map[string]string `json:"annotations,omitempty"`
		} `json:"rules"`
	} `json:"groups"`
}

// base is the kustomize base, every file decoded.
type base struct {
	kustomization kustomization
	configYAML    []byte
	configMap     corev1.ConfigMap
	deployment    appsv1.Deployment
	service       corev1.Service
	pdb           policyv1.PodDisruptionBudget
	monitor       serviceMonitor
	rule          prometheusRule
}

func loadBase(t *testing.T) *base {
	t.Helper()
	var b base
	decodeStrict(t, filepath.Join(k8sDir, "kustomization.yaml"), &b.kustomization)
	k := b.kustomization
	if k.APIVersion != "kustomize.config.k8s.io/v1beta1" || k.Kind != "Kustomization" {
		t.Fatalf("kustomization.yaml is %s %s", k.APIVersion, k.Kind)
	}

	// Every manifest in the folder is a resource, and every resource is
	// in the folder: a file left out would be tested here but never
	// applied.
	files, err := filepath.Glob(filepath.Join(k8sDir, "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var manifests []string
	for _, f := range files {
		if name := filepath.Base(f); name != "kustomization.yaml" && name != "strangler.yaml" {
			manifests = append(manifests, name)
		}
	}
	resources := slices.Sorted(slices.Values(k.Resources))
	if !slices.Equal(manifests, resources) {
		t.Fatalf("kustomization.yaml lists resources %v, the folder has %v", resources, manifests)
	}
	objects := map[string]any{
		"deployment.yaml":          &b.deployment,
		"service.yaml":             &b.service,
		"poddisruptionbudget.yaml": &b.pdb,
		"servicemonitor.yaml":      &b.monitor,
		"prometheusrule.yaml":      &b.rule,
	}
	for _, name := range manifests {
		v, ok := objects[name]
		if !ok {
			t.Fatalf("%s: no test decodes this manifest; add it to loadBase", name)
		}
		decodeStrict(t, filepath.Join(k8sDir, name), v)
	}
	for name, want := range map[string][2]string{
		"deployment.yaml":          {b.deployment.APIVersion + " " + b.deployment.Kind, "apps/v1 Deployment"},
		"service.yaml":             {b.service.APIVersion + " " + b.service.Kind, "v1 Service"},
		"poddisruptionbudget.yaml": {b.pdb.APIVersion + " " + b.pdb.Kind, "policy/v1 PodDisruptionBudget"},
		"servicemonitor.yaml":      {b.monitor.APIVersion + " " + b.monitor.Kind, "monitoring.coreos.com/v1 ServiceMonitor"},
		"prometheusrule.yaml":      {b.rule.APIVersion + " " + b.rule.Kind, "monitoring.coreos.com/v1 PrometheusRule"},
	} {
		if want[0] != want[1] {
			t.Errorf("%s is %q, want %q", name, want[0], want[1])
		}
	}

	// The ConfigMap, as kustomize generates it.
	if len(k.ConfigMapGenerator) != 1 || !slices.Equal(k.ConfigMapGenerator[0].Files, []string{"strangler.yaml"}) {
		t.Fatalf("configMapGenerator %+v, want one ConfigMap of strangler.yaml", k.ConfigMapGenerator)
	}
	if !k.GeneratorOptions.DisableNameSuffixHash {
		// With a hash suffix every edit is a new ConfigMap and a rolling
		// restart, instead of the live reload the directory mount gives.
		t.Error("generatorOptions.disableNameSuffixHash must be true")
	}
	b.configYAML, err = os.ReadFile(filepath.Join(k8sDir, "strangler.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	b.configMap = corev1.ConfigMap{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "ConfigMap"},
		ObjectMeta: metav1.ObjectMeta{Name: k.ConfigMapGenerator[0].Name},
		Data:       map[string]string{"strangler.yaml": string(b.configYAML)},
	}
	return &b
}

func TestKubernetesConfig(t *testing.T) {
	b := loadBase(t)
	cfg, err := config.Parse(b.configYAML)
	if err != nil {
		t.Fatalf("kubernetes/strangler.yaml: %v", err)
	}
	if w := cfg.Warnings(); len(w) > 0 {
		t.Errorf("kubernetes/strangler.yaml: warnings %v", w)
	}
	ports := containerPorts(t, b.deployment)
	for _, l := range []struct{ key, addr, port string }{
		{"listen", cfg.Listen, "http"},
		{"admin.listen", cfg.Admin.Listen, "admin"},
	} {
		if want := fmt.Sprintf("0.0.0.0:%d", ports[l.port]); l.addr != want {
			t.Errorf("%s %q, want %q: the pod's %s port on every interface", l.key, l.addr, want, l.port)
		}
	}
	// Guards that read Prometheus select this deployment's series by the
	// job the ServiceMonitor gives them: the Service's name.
	for _, r := range cfg.Routes {
		if r.Guard == nil || r.Guard.Source != config.GuardSourcePrometheus {
			continue
		}
		if job := fmt.Sprintf("job=%q", b.service.Name); !strings.Contains(r.Guard.PrometheusMatchers, job) {
			t.Errorf("routes %s: guard.prometheus_matchers %q does not select %s", r.Name, r.Guard.PrometheusMatchers, job)
		}
	}
}

func TestKubernetesDeployment(t *testing.T) {
	b := loadBase(t)
	d := b.deployment
	if d.Spec.Replicas == nil || *d.Spec.Replicas != 3 {
		t.Errorf("replicas %v, want 3", d.Spec.Replicas)
	}
	pod := d.Spec.Template.Spec
	if len(pod.Containers) != 1 {
		t.Fatalf("%d containers, want 1", len(pod.Containers))
	}
	c := pod.Containers[0]
	if len(c.Command) > 0 {
		t.Errorf("command %q overrides the image's entrypoint /strangler", c.Command)
	}
	if len(c.Args) < 3 || !slices.Equal(c.Args[:3], []string{"serve", "--config", configFile}) {
		t.Errorf("args %q, want serve --config %s ...", c.Args, configFile)
	}

	// Probes on the admin listener.
	ports := containerPorts(t, d)
	for _, p := range []struct {
		name  string
		probe *corev1.Probe
		path  string
	}{{"readinessProbe", c.ReadinessProbe, "/readyz"}, {"livenessProbe", c.LivenessProbe, "/healthz"}} {
		if p.probe == nil || p.probe.HTTPGet == nil {
			t.Errorf("%s: want an HTTP GET of %s", p.name, p.path)
			continue
		}
		g := p.probe.HTTPGet
		if g.Path != p.path || resolvePort(t, g.Port, ports) != 9090 {
			t.Errorf("%s: GET %s on port %s, want %s on the admin port 9090", p.name, g.Path, g.Port.String(), p.path)
		}
	}

	// The config: the ConfigMap, mounted as a directory.
	var volume string
	for _, v := range pod.Volumes {
		if v.ConfigMap != nil && v.ConfigMap.Name == b.configMap.Name {
			volume = v.Name
		}
	}
	if volume == "" {
		t.Fatalf("no volume of the ConfigMap %q", b.configMap.Name)
	}
	var mounted bool
	for _, m := range c.VolumeMounts {
		if m.Name != volume {
			continue
		}
		mounted = true
		if m.SubPath != "" || m.SubPathExpr != "" {
			t.Errorf("mount %s has a subPath: the kubelet never updates those, so reloads would never arrive", m.Name)
		}
		if m.MountPath != configMount || !m.ReadOnly {
			t.Errorf("mount %s at %s (read-only %v), want %s read-only", m.Name, m.MountPath, m.ReadOnly, configMount)
		}
	}
	if !mounted {
		t.Errorf("volume %s is not mounted", volume)
	}
	if _, ok := b.configMap.Data[filepath.Base(configFile)]; !ok {
		t.Errorf("the ConfigMap has no key %s", filepath.Base(configFile))
	}

	// A stop fits in the grace period: the preStop sleep, then
	// --shutdown-grace for requests and as long again for comparisons,
	// then the trace flush (cmd/strangler/serve.go).
	grace := shutdownGrace(t, c.Args)
	var preStop time.Duration
	if c.Lifecycle != nil && c.Lifecycle.PreStop != nil && c.Lifecycle.PreStop.Sleep != nil {
		preStop = time.Duration(c.Lifecycle.PreStop.Sleep.Seconds) * time.Second
	}
	need := preStop + 2*grace + 5*time.Second
	if pod.TerminationGracePeriodSeconds == nil || time.Duration(*pod.TerminationGracePeriodSeconds)*time.Second <= need {
		t.Errorf("terminationGracePeriodSeconds %v, want above %v (preStop %v + 2 × --shutdown-grace %v + 5s)",
			pod.TerminationGracePeriodSeconds, need, preStop, grace)
	}

	// Hardening.
	if sc := pod.SecurityContext; sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot {
		t.Error("pod securityContext.runAsNonRoot must be true")
	}
	sc := c.SecurityContext
	switch {
	case sc == nil:
		t.Fatal("container has no securityContext")
	case sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem:
		t.Error("readOnlyRootFilesystem must be true")
	case sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation:
		t.Error("allowPrivilegeEscalation must be false")
	case sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}):
		t.Error("capabilities must drop ALL")
	}
	if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() || c.Resources.Limits.Memory().IsZero() {
		t.Errorf("resources %+v: want cpu and memory requests and a memory limit", c.Resources)
	}

	// The selectors find the pods.
	labels := d.Spec.Template.Labels
	for name, sel := range map[string]map[string]string{
		"deployment":          d.Spec.Selector.MatchLabels,
		"service":             b.service.Spec.Selector,
		"poddisruptionbudget": b.pdb.Spec.Selector.MatchLabels,
	} {
		if len(sel) == 0 || !subset(sel, labels) {
			t.Errorf("%s selector %v does not select the pods %v", name, sel, labels)
		}
	}
}

func TestKubernetesService(t *testing.T) {
	b := loadBase(t)
	ports := containerPorts(t, b.deployment)
	want := map[string]int32{"http": 8080, "admin": 9090}
	got := map[string]int32{}
	for _, p := range b.service.Spec.Ports {
		got[p.Name] = p.Port
		if target := resolvePort(t, p.TargetPort, ports); target != want[p.Name] {
			t.Errorf("service port %s targets %d, want %d", p.Name, target, want[p.Name])
		}
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("service ports %v, want %v", got, want)
	}

	// One replica at a time, whichever way the budget says it.
	s := b.pdb.Spec
	ok := s.MaxUnavailable != nil && s.MinAvailable == nil && s.MaxUnavailable.String() == "1" ||
		s.MinAvailable != nil && s.MaxUnavailable == nil && s.MinAvailable.String() == "2"
	if !ok {
		t.Errorf("PodDisruptionBudget minAvailable %v maxUnavailable %v, want maxUnavailable 1 or minAvailable 2", s.MinAvailable, s.MaxUnavailable)
	}

	// The ServiceMonitor scrapes the admin port's /metrics of this Service.
	m := b.monitor.Spec
	if len(m.Selector.MatchLabels) == 0 || !subset(m.Selector.MatchLabels, b.service.Labels) {
		t.Errorf("ServiceMonitor selector %v does not select the Service's labels %v", m.Selector.MatchLabels, b.service.Labels)
	}
	if len(m.Endpoints) != 1 || m.Endpoints[0].Port != "admin" || m.Endpoints[0].Path != "/metrics" {
		t.Errorf("ServiceMonitor endpoints %+v, want port admin, path /metrics", m.Endpoints)
	}
	for _, d := range []string{m.Endpoints[0].Interval, m.Endpoints[0].ScrapeTimeout} {
		if _, err := time.ParseDuration(d); d != "" && err != nil {
			t.Errorf("ServiceMonitor: %v", err)
		}
	}
}

// TestPrometheusRule keeps the PrometheusRule equal to the rule files the
// dashboards are tested with; -update rewrites it from them.
func TestPrometheusRule(t *testing.T) {
	path := filepath.Join(k8sDir, "prometheusrule.yaml")
	want := generatePrometheusRule(t)
	if *update {
		if err := os.WriteFile(path, want, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	b := loadBase(t)
	var fromFiles ruleGroups
	for _, f := range ruleFiles {
		var g ruleGroups
		decodeStrict(t, f, &g)
		fromFiles.Groups = append(fromFiles.Groups, g.Groups...)
	}
	if !reflect.DeepEqual(b.rule.Spec, fromFiles) {
		t.Fatalf("%s's groups differ from %v: regenerate it with go test ./deploy/ -run TestPrometheusRule -update", path, ruleFiles)
	}
	// The same, byte for byte, comments and all.
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s is not what the rule files generate: regenerate it with go test ./deploy/ -run TestPrometheusRule -update", path)
	}
	if len(b.rule.Spec.Groups) == 0 {
		t.Fatal("no rule groups")
	}
}

// generatePrometheusRule wraps the rule files' groups, comments included,
// in a PrometheusRule.
func generatePrometheusRule(t *testing.T) []byte {
	t.Helper()
	var out bytes.Buffer
	out.WriteString(`# GENERATED from dashboards/prometheus/rules.yml (alerts) and recording.yml
# (the series the divergence dashboard reads); do not edit. After changing
# those files:  go test ./deploy/ -run TestPrometheusRule -update
# Your Prometheus may select rules by a label (e.g. release: prometheus):
# add it in an overlay.
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: strangler
  labels:
    app.kubernetes.io/name: strangler
    app.kubernetes.io/component: proxy
spec:
  groups:
`)
	for _, f := range ruleFiles {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		// Everything after the top-level "groups:" line, two spaces deeper.
		_, groups, ok := bytes.Cut(data, []byte("\ngroups:\n"))
		if !ok {
			t.Fatalf("%s: no top-level groups: line", f)
		}
		fmt.Fprintf(&out, "    # %s\n", strings.TrimPrefix(f, "../"))
		for line := range strings.Lines(string(groups)) {
			if strings.TrimSpace(line) == "" {
				out.WriteString("\n")
				continue
			}
			out.WriteString("  " + line)
		}
	}
	return out.Bytes()
}

// containerPorts maps the strangler container's port names to numbers.
func containerPorts(t *testing.T, d appsv1.Deployment) map[string]int32 {
	t.Helper()
	ports := map[string]int32{}
	for _, c := range d.Spec.Template.Spec.Containers {
		for _, p := range c.Ports {
			ports[p.Name] = p.ContainerPort
		}
	}
	if ports["http"] != 8080 || ports["admin"] != 9090 {
		t.Fatalf("container ports %v, want http 8080 and admin 9090", ports)
	}
	return ports
}

func resolvePort(t *testing.T, p intstr.IntOrString, named map[string]int32) int32 {
	t.Helper()
	if p.Type == intstr.Int {
		return p.IntVal
	}
	n, ok := named[p.StrVal]
	if !ok {
		t.Errorf("port %q is not a container port", p.StrVal)
	}
	return n
}

// shutdownGrace is serve's --shutdown-grace in args, which the manifest
// must spell out so that this test sees the value the grace period is
// sized for.
func shutdownGrace(t *testing.T, args []string) time.Duration {
	t.Helper()
	for i, a := range args {
		v, ok := strings.CutPrefix(a, "--shutdown-grace=")
		if !ok && a == "--shutdown-grace" && i+1 < len(args) {
			v, ok = args[i+1], true
		}
		if ok {
			d, err := time.ParseDuration(v)
			if err != nil {
				t.Fatalf("--shutdown-grace %q: %v", v, err)
			}
			return d
		}
	}
	t.Fatalf("args %q: spell out --shutdown-grace, which terminationGracePeriodSeconds is sized for", args)
	return 0
}

func subset(sel, labels map[string]string) bool {
	for k, v := range sel {
		if labels[k] != v {
			return false
		}
	}
	return true
}
