package kubesvc

import (
	"context"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/cni-genie/cni-genie/pkg/service"
	"github.com/cni-genie/cni-genie/pkg/store"
	"github.com/cni-genie/cni-genie/pkg/store/etcdstore"
	"github.com/cni-genie/cni-genie/pkg/store/storetest"
	"github.com/cni-genie/cni-genie/pkg/testutil/kubeapi"
	"github.com/cni-genie/cni-genie/pkg/vpc"
)

func TestMain(m *testing.M) { kubeapi.Main(m) }

// A standard Service annotated with a VPC network gets a VIP in that VPC,
// on the real API server; edits follow, a bad network is reported on the
// object, deletion removes the VPC service.
func TestKubernetesServiceGetsVPCVIP(t *testing.T) {
	srv := kubeapi.Shared(t)
	cs, err := srv.Clientset()
	if err != nil {
		t.Fatal(err)
	}
	ns := srv.CreateNamespace(t, "svc")
	e, err := etcdstore.StartEmbedded(t.Context(), etcdstore.EmbeddedConfig{DataDir: filepath.Join(t.TempDir(), "etcd")})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	st, err := etcdstore.New(t.Context(), e.Endpoints(), etcdstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	storetest.MustVPC(t, st, "blue", "10.10.0.0/16")
	storetest.MustSubnet(t, st, "blue", "web", "10.10.1.0/24")

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	go func() { _ = (&Controller{Kube: cs, Store: st}).Run(ctx) }()

	mk := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Annotations: map[string]string{AnnotationNetwork: "blue/web"}},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "web"},
			Ports: []corev1.ServicePort{{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromInt32(8080)}}},
	}
	k8s, err := cs.CoreV1().Services(ns).Create(t.Context(), mk, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	gname := Name(ns, "web")
	var got service.Service
	waitFor(t, "the vpc service and its vip annotation", func() bool {
		got, err = st.GetService(t.Context(), "blue", gname)
		if err != nil {
			return false
		}
		s, err := cs.CoreV1().Services(ns).Get(t.Context(), "web", metav1.GetOptions{})
		return err == nil && s.Annotations[AnnotationVIP] == got.VIP.String()
	})
	if !netip.MustParsePrefix("10.10.0.0/16").Contains(got.VIP) || netip.MustParsePrefix("10.10.1.0/24").Contains(got.VIP) ||
		got.PodNamespace != ns || got.Selector["app"] != "web" || got.Ports[0].TargetPort != 8080 {
		t.Fatalf("mirrored %+v", got)
	}
	if k8s.Spec.ClusterIP == got.VIP.String() {
		t.Fatalf("the vpc vip equals the cluster ip %s", k8s.Spec.ClusterIP)
	}
	// Backends come from endpoint records of the Service's namespace only.
	eps := []vpc.Endpoint{
		{VPC: "blue", ID: "a/eth1", IP: netip.MustParseAddr("10.10.1.5"), PodNamespace: ns, Labels: map[string]string{"app": "web"}},
		{VPC: "blue", ID: "b/eth1", IP: netip.MustParseAddr("10.10.1.6"), PodNamespace: "other", Labels: map[string]string{"app": "web"}},
	}
	if b := service.Resolve(got, eps); len(b.Backends) != 1 || b.Backends[0].IP != eps[0].IP {
		t.Fatalf("backends %+v, want only the pod of namespace %s", b.Backends, ns)
	}

	// An added port is followed, the VIP kept.
	k8s, _ = cs.CoreV1().Services(ns).Get(t.Context(), "web", metav1.GetOptions{})
	k8s.Spec.Ports = append(k8s.Spec.Ports, corev1.ServicePort{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP, TargetPort: intstr.FromInt32(53)})
	if _, err := cs.CoreV1().Services(ns).Update(t.Context(), k8s, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the second port", func() bool {
		s, err := st.GetService(t.Context(), "blue", gname)
		return err == nil && len(s.Ports) == 2 && s.VIP == got.VIP
	})

	// An unknown network is reported on the Service.
	bad := mk.DeepCopy()
	bad.Name, bad.Annotations = "bad", map[string]string{AnnotationNetwork: "green/web"}
	if _, err := cs.CoreV1().Services(ns).Create(t.Context(), bad, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the error annotation", func() bool {
		s, err := cs.CoreV1().Services(ns).Get(t.Context(), "bad", metav1.GetOptions{})
		return err == nil && strings.Contains(s.Annotations[AnnotationError], "green/web")
	})

	if err := cs.CoreV1().Services(ns).Delete(t.Context(), "web", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the vpc service removed", func() bool {
		_, err := st.GetService(t.Context(), "blue", gname)
		return err != nil && strings.Contains(err.Error(), store.ErrNotFound.Error())
	})
}

func waitFor(t *testing.T, what string, f func() bool) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if f() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}
