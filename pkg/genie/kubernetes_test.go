package genie

import (
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cni-genie/cni-genie/pkg/selection"
	"github.com/cni-genie/cni-genie/pkg/testutil/kubeapi"
	"github.com/containernetworking/cni/pkg/types"
	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/cni-genie/cni-genie/pkg/testutil/testenv"
)

func TestMain(m *testing.M) { kubeapi.Main(m) }

var nadGVR = schema.GroupVersionResource{Group: "k8s.cni.cncf.io", Version: "v1", Resource: "network-attachment-definitions"}

// kubeEnv is a testEnv plus a real API server namespace and genie's
// kubeconfig (admin token: RBAC is test/k8s's subject).
type kubeEnv struct {
	*testEnv
	cs *kubernetes.Clientset
	ns string
}

func newKubeEnv(t *testing.T, version string) *kubeEnv {
	e := newTestEnv(t, version)
	srv := kubeapi.Shared(t)
	crds, err := kubeapi.CRDDir()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kubeapi.InstallCRDs(t.Context(), srv.RESTConfig(), filepath.Join(crds, "network-attachment-definition.yaml")); err != nil {
		t.Fatalf("installing the NAD CRD: %v", err)
	}
	cs, err := srv.Clientset()
	if err != nil {
		t.Fatal(err)
	}
	kc := filepath.Join(t.TempDir(), "genie.kubeconfig")
	if err := srv.WriteKubeconfig(kc, ""); err != nil {
		t.Fatal(err)
	}
	e.extra["kubeconfig"] = kc
	ke := &kubeEnv{testEnv: e, cs: cs, ns: srv.CreateNamespace(t, "genie-unit")}
	dyn, err := dynamic.NewForConfig(srv.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	// NADs with an empty spec.config resolve to the conf dir network of the
	// same name.
	for _, name := range []string{"mv", "br-b"} {
		obj := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
			"metadata": map[string]any{"name": name, "namespace": ke.ns},
			"spec":     map[string]any{"config": ""},
		}}
		if _, err := dyn.Resource(nadGVR).Namespace(ke.ns).Create(t.Context(), obj, metav1.CreateOptions{}); err != nil {
			t.Fatalf("create nad %s: %v", name, err)
		}
	}
	return ke
}

func (k *kubeEnv) pod(t *testing.T, name string, ann map[string]string) *corev1.Pod {
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: k.ns, Annotations: ann},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "example.invalid/none"}}}}
	p, err := k.cs.CoreV1().Pods(k.ns).Create(t.Context(), p, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func (k *kubeEnv) podArgs(p *corev1.Pod) string {
	return "IgnoreUnknown=1;K8S_POD_NAMESPACE=" + p.Namespace + ";K8S_POD_NAME=" + p.Name + ";K8S_POD_UID=" + string(p.UID)
}

func (k *kubeEnv) status(t *testing.T, name string) []nadv1.NetworkStatus {
	p, err := k.cs.CoreV1().Pods(k.ns).Get(t.Context(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var st []nadv1.NetworkStatus
	if err := json.Unmarshal([]byte(p.Annotations[selection.NetworkStatusAnnotation]), &st); err != nil {
		t.Fatalf("network-status %q: %v", p.Annotations[selection.NetworkStatusAnnotation], err)
	}
	return st
}

// TestPrivilegedKubernetesSelection covers the Kubernetes-mode selection
// paths against a real API server: the classic cni annotation, NPWG
// precedence over it, NPWG default-route (the pod's default route moves and
// network-status marks that network default), and refusals of malformed
// JSON and of two default-route requests with nothing left behind.
func TestPrivilegedKubernetesSelection(t *testing.T) {
	forEachVersion(t, func(t *testing.T, v string) {
		k := newKubeEnv(t, v)

		// Classic annotation: replaces the default, first listed is default.
		p := k.pod(t, "classic", map[string]string{selection.ClassicAnnotation: "br-a,mv@eth3"})
		pod := testenv.NewNS(t)
		a := k.cmdArgs("k8s-classic-"+k.sfx, pod, k.podArgs(p))
		if _, err := k.add(a); err != nil {
			k.dumpLog()
			t.Fatalf("classic add: %v", err)
		}
		st := k.status(t, "classic")
		if len(st) != 2 || st[0].Name != "br-a" || !st[0].Default || st[0].Interface != "eth0" ||
			st[1].Name != "mv" || st[1].Default || st[1].Interface != "eth3" || len(st[1].IPs) != 1 ||
			!strings.HasPrefix(st[1].IPs[0], "10.20.0.") || st[1].Mac == "" {
			t.Fatalf("classic network-status %+v", st)
		}
		if err := k.del(a); err != nil {
			t.Fatal(err)
		}

		// NPWG wins over classic; default-route moves the default route.
		p = k.pod(t, "npwg", map[string]string{
			selection.ClassicAnnotation:  "br-b",
			selection.NetworksAnnotation: `[{"name":"mv","default-route":["10.20.0.1"]},{"name":"br-b","interface":"data0"}]`,
		})
		pod = testenv.NewNS(t)
		a = k.cmdArgs("k8s-npwg-"+k.sfx, pod, k.podArgs(p))
		res, err := k.add(a)
		if err != nil {
			k.dumpLog()
			t.Fatalf("npwg add: %v", err)
		}
		ps := readPod(t, pod)
		if d := ps.defaultRoutes(); len(d) != 1 || d[0] != "via 10.20.0.1 dev net1" {
			t.Fatalf("default routes %v, want only via 10.20.0.1 dev net1", d)
		}
		if len(ps.addrs) != 3 || !oneAddrIn(ps.addrs["data0"], "10.30.0.") {
			t.Fatalf("pod addresses %v", ps.addrs)
		}
		var defaults []string
		for _, r := range res.Routes {
			if ones, _ := r.Dst.Mask.Size(); ones == 0 {
				defaults = append(defaults, r.GW.String())
			}
		}
		if len(defaults) != 1 || defaults[0] != "10.20.0.1" {
			t.Fatalf("result default routes via %v, want only 10.20.0.1", defaults)
		}
		st = k.status(t, "npwg")
		if len(st) != 3 || st[0].Name != "br-a" || st[0].Default || st[1].Name != k.ns+"/mv" || !st[1].Default ||
			st[1].Interface != "net1" || st[2].Name != k.ns+"/br-b" || st[2].Interface != "data0" {
			t.Fatalf("npwg network-status %+v", st)
		}
		if err := k.del(a); err != nil {
			t.Fatal(err)
		}
		if al := k.allocations(); len(al) != 0 {
			t.Fatalf("allocations after DEL: %v", al)
		}

		// Refusals.
		for _, tc := range []struct {
			name, ann string
			code      uint
			want      string
		}{
			{"malformed", `[{"name":"mv"`, types.ErrDecodingFailure, "parse annotation " + selection.NetworksAnnotation},
			{"two-routes", `[{"name":"mv","default-route":["10.20.0.1"]},{"name":"br-b","default-route":["10.30.0.1"]}]`,
				types.ErrInvalidNetworkConfig, "default-route requested by more than one network"},
			{"unknown", `missing-nad`, types.ErrInvalidNetworkConfig, "unknown network"},
		} {
			p := k.pod(t, tc.name, map[string]string{selection.NetworksAnnotation: tc.ann})
			pod := testenv.NewNS(t)
			_, err := k.add(k.cmdArgs("k8s-"+tc.name+"-"+k.sfx, pod, k.podArgs(p)))
			var te *types.Error
			if !errors.As(err, &te) || te.Code != tc.code || !strings.Contains(te.Msg, tc.want) {
				t.Fatalf("%s: want code %d containing %q, got %v", tc.name, tc.code, tc.want, err)
			}
			if ps := readPod(t, pod); len(ps.addrs) != 0 || len(k.allocations()) != 0 || len(k.records()) != 0 {
				t.Fatalf("%s: left behind: links %v allocations %v records %v", tc.name, ps.addrs, k.allocations(), k.records())
			}
		}
	})
}
