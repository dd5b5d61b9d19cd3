package install

import (
	"bufio"
	"bytes"
	"flag"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes/scheme"

	"github.com/cni-genie/cni-genie/pkg/agent"
	"github.com/cni-genie/cni-genie/pkg/image"
	"github.com/cni-genie/cni-genie/pkg/kube"
	"github.com/cni-genie/cni-genie/pkg/store/kubestore"
	"github.com/cni-genie/cni-genie/pkg/testutil/testenv"
)

// TestChartCopiesMatchSources checks the chart's CRDs and policies are
// exact copies of deploy/crds and deploy/policy (hack/sync-chart.sh).
func TestChartCopiesMatchSources(t *testing.T) {
	root := testenv.ModuleRoot(t)
	for src, dst := range map[string]string{
		"deploy/crds":   "deploy/helm/cni-genie/crds",
		"deploy/policy": "deploy/helm/cni-genie/files/policy",
	} {
		want, _ := filepath.Glob(filepath.Join(root, src, "*.yaml"))
		got, _ := filepath.Glob(filepath.Join(root, dst, "*.yaml"))
		if len(want) != len(got) {
			t.Errorf("%s has %d files, %s %d: run make manifests", src, len(want), dst, len(got))
			continue
		}
		for i := range want {
			a, _ := os.ReadFile(want[i])
			b, _ := os.ReadFile(got[i])
			if filepath.Base(want[i]) != filepath.Base(got[i]) || !bytes.Equal(a, b) {
				t.Errorf("%s differs from %s: run make manifests", got[i], want[i])
			}
		}
	}
}

// TestManifestsRendered re-renders the chart with helm and compares with
// the committed deploy/manifests.
func TestManifestsRendered(t *testing.T) {
	root := testenv.ModuleRoot(t)
	helm := filepath.Join(testenv.BinDir(t), "helm")
	if _, err := os.Stat(helm); err != nil {
		if os.Getenv("GENIE_REQUIRE_KUBE") == "1" {
			t.Fatalf("helm missing (run hack/build-test-bins.sh): %v", err)
		}
		t.Skipf("needs helm (run hack/build-test-bins.sh): %v", err)
	}
	for file, extra := range map[string][]string{
		"cni-genie.yaml":           {"--include-crds"},
		"cni-genie-uninstall.yaml": {"--set", "uninstall=true"},
	} {
		args := append([]string{"template", "cni-genie", filepath.Join(root, "deploy/helm/cni-genie"), "--namespace", "kube-system"}, extra...)
		out, err := exec.Command(helm, args...).Output()
		if err != nil {
			t.Fatalf("helm template: %v", err)
		}
		committed, err := os.ReadFile(filepath.Join(root, "deploy/manifests", file))
		if err != nil {
			t.Fatal(err)
		}
		_, body, _ := bytes.Cut(committed, []byte("\n"))
		if !bytes.Equal(body, out) {
			t.Errorf("deploy/manifests/%s is stale: run make manifests", file)
		}
	}
}

// objects decodes every document of a manifest file with the client-go
// scheme; kinds it does not know (CRDs, policies) are returned by kind only.
func objects(t *testing.T, path string) ([]runtime.Object, []string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r := utilyaml.NewYAMLReader(bufioReader(f))
	var objs []runtime.Object
	var kinds []string
	for {
		doc, err := r.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if len(bytes.TrimSpace(stripComments(doc))) == 0 {
			continue
		}
		obj, gvk, err := scheme.Codecs.UniversalDeserializer().Decode(doc, nil, nil)
		if err != nil {
			var meta struct{ Kind string }
			if uerr := utilyaml.Unmarshal(doc, &meta); uerr != nil || meta.Kind == "" {
				t.Fatalf("%s: undecodable document: %v\n%s", path, err, doc)
			}
			kinds = append(kinds, meta.Kind)
			continue
		}
		kinds = append(kinds, gvk.Kind)
		objs = append(objs, obj)
	}
	return objs, kinds
}

func stripComments(doc []byte) []byte {
	var out [][]byte
	for _, l := range bytes.Split(doc, []byte("\n")) {
		if !bytes.HasPrefix(bytes.TrimSpace(l), []byte("#")) {
			out = append(out, l)
		}
	}
	return bytes.Join(out, []byte("\n"))
}

// normRules makes rules comparable regardless of order.
func normRules(rules []rbacv1.PolicyRule) []string {
	var out []string
	for _, r := range rules {
		for _, g := range r.APIGroups {
			for _, res := range r.Resources {
				for _, v := range r.Verbs {
					out = append(out, g+"/"+res+":"+v+":"+strings.Join(r.ResourceNames, ","))
				}
			}
		}
	}
	sort.Strings(out)
	return out
}

// TestManifestsInstall checks the rendered install: the RBAC grants
// exactly what the code's PolicyRules say, the DaemonSet runs the image's
// binaries with flags they define, unprivileged, in the host network,
// with probes on the agent's metrics port.
func TestManifestsInstall(t *testing.T) {
	root := testenv.ModuleRoot(t)
	objs, kinds := objects(t, filepath.Join(root, "deploy/manifests/cni-genie.yaml"))
	crds := 0
	for _, k := range kinds {
		if k == "CustomResourceDefinition" {
			crds++
		}
	}
	srcCRDs, _ := filepath.Glob(filepath.Join(root, "deploy/crds/*.yaml"))
	if crds != len(srcCRDs) {
		t.Errorf("manifest has %d CRDs, deploy/crds %d", crds, len(srcCRDs))
	}
	roles := map[string]*rbacv1.ClusterRole{}
	var ds *appsv1.DaemonSet
	var tokenRole *rbacv1.Role
	var bindings []*rbacv1.ClusterRoleBinding
	for _, o := range objs {
		switch o := o.(type) {
		case *rbacv1.ClusterRoleBinding:
			bindings = append(bindings, o)
		case *rbacv1.ClusterRole:
			roles[o.Name] = o
		case *rbacv1.Role:
			tokenRole = o
		case *appsv1.DaemonSet:
			ds = o
		}
	}
	if r := roles["genie-agent"]; r == nil || !reflect.DeepEqual(normRules(r.Rules), normRules(kubestore.AgentPolicyRules())) {
		t.Errorf("agent ClusterRole does not grant exactly kubestore.AgentPolicyRules")
	}
	if r := roles["genie-cni"]; r == nil || !reflect.DeepEqual(normRules(r.Rules), normRules(kube.PolicyRules())) {
		t.Errorf("plugin ClusterRole does not grant exactly kube.PolicyRules")
	}
	// Each service account is bound to its role, and the agent's has the
	// name the node-scope policy recognises.
	want := map[string]string{"genie-agent": kubestore.AgentServiceAccount, "genie-cni": "genie-cni"}
	for _, b := range bindings {
		if sa, ok := want[b.RoleRef.Name]; ok && len(b.Subjects) == 1 && b.Subjects[0].Kind == "ServiceAccount" && b.Subjects[0].Name == sa {
			delete(want, b.RoleRef.Name)
		}
	}
	if len(want) != 0 {
		t.Errorf("ClusterRoles not bound to their service accounts: %v", want)
	}
	if tokenRole == nil || !reflect.DeepEqual(normRules(tokenRole.Rules), []string{"/serviceaccounts/token:create:genie-cni"}) {
		t.Errorf("token Role: %+v", tokenRole)
	}
	if ds == nil {
		t.Fatal("no DaemonSet")
	}
	spec := ds.Spec.Template.Spec
	if !spec.HostNetwork || spec.ServiceAccountName != kubestore.AgentServiceAccount {
		t.Errorf("hostNetwork %v serviceAccount %q", spec.HostNetwork, spec.ServiceAccountName)
	}
	containers := map[string]corev1.Container{}
	for _, c := range spec.Containers {
		containers[c.Name] = c
		sc := c.SecurityContext
		if sc == nil || (sc.Privileged != nil && *sc.Privileged) {
			t.Errorf("%s: privileged or no security context (none is, by default)", c.Name)
			continue
		}
		if sc.Capabilities == nil || len(sc.Capabilities.Drop) != 1 || sc.Capabilities.Drop[0] != "ALL" {
			t.Errorf("%s keeps capabilities it does not add", c.Name)
		}
		// The agent's capabilities, exactly those docs/install.md explains.
		var add []string
		if sc.Capabilities != nil {
			for _, a := range sc.Capabilities.Add {
				add = append(add, string(a))
			}
		}
		wantAdd := []string(nil)
		if c.Name == "genied" {
			wantAdd = []string{"BPF", "PERFMON", "NET_ADMIN", "NET_RAW", "SYS_ADMIN"}
		}
		if !reflect.DeepEqual(add, wantAdd) {
			t.Errorf("%s adds capabilities %v, want %v", c.Name, add, wantAdd)
		}
		if "docker.io/"+c.Image != image.GenieRef {
			t.Errorf("%s: image %s is not the one make image builds (%s)", c.Name, c.Image, image.GenieRef)
		}
	}
	agentC, ok := containers["genied"]
	if !ok {
		t.Fatal("no genied container")
	}
	fs := flag.NewFlagSet("genied", flag.ContinueOnError)
	cfg := agent.DefaultConfig()
	cfg.RegisterFlags(fs)
	checkFlags(t, "genied", fs, agentC.Args)
	// /proc/sys is read-only without privileged: net sysctls go through
	// the host's /proc/sys/net, mounted where --proc-sys-net says.
	if cfg.ProcSysNet == "" {
		t.Error("genied has no --proc-sys-net")
	}
	mounted := false
	for _, m := range agentC.VolumeMounts {
		for _, v := range spec.Volumes {
			if v.Name == m.Name && m.MountPath == cfg.ProcSysNet && !m.ReadOnly && v.HostPath != nil && v.HostPath.Path == "/proc/sys/net" {
				mounted = true
			}
		}
	}
	if !mounted {
		t.Errorf("genied --proc-sys-net=%s is not a writable mount of the host's /proc/sys/net", cfg.ProcSysNet)
	}
	for _, p := range []*corev1.Probe{agentC.StartupProbe, agentC.LivenessProbe, agentC.ReadinessProbe} {
		if p == nil || p.HTTPGet == nil || p.HTTPGet.Port.IntValue() != 9465 {
			t.Errorf("genied probe %+v not on the metrics port", p)
		}
	}
	if agentC.ReadinessProbe.HTTPGet.Path != "/readyz" || agentC.LivenessProbe.HTTPGet.Path != "/healthz" {
		t.Errorf("probe paths %s %s", agentC.ReadinessProbe.HTTPGet.Path, agentC.LivenessProbe.HTTPGet.Path)
	}
	inst, ok := containers["install-cni"]
	if !ok || len(inst.Args) == 0 || inst.Args[0] != "run" {
		t.Fatalf("install-cni: %+v", inst.Args)
	}
	checkFlags(t, "genie-install", newFlags(io.Discard, &Options{}, new(bool), new(bool)), inst.Args[1:])

	_, ukinds := objects(t, filepath.Join(root, "deploy/manifests/cni-genie-uninstall.yaml"))
	if !reflect.DeepEqual(ukinds, []string{"DaemonSet"}) {
		t.Errorf("uninstall manifest holds %v, want only the uninstall DaemonSet", ukinds)
	}
}

// checkFlags parses args with fs: every flag must exist and parse.
func checkFlags(t *testing.T, name string, fs *flag.FlagSet, args []string) {
	t.Helper()
	fs.SetOutput(io.Discard)
	expanded := make([]string, len(args))
	for i, a := range args {
		expanded[i] = strings.ReplaceAll(a, "$(NODE_NAME)", "node-1")
	}
	if err := fs.Parse(expanded); err != nil {
		t.Errorf("%s args %v: %v", name, args, err)
	}
	if fs.NArg() != 0 {
		t.Errorf("%s: stray arguments %v", name, fs.Args())
	}
}

func bufioReader(r io.Reader) *bufio.Reader { return bufio.NewReader(r) }
