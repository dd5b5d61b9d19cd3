package cli

import (
	"bytes"
	"context"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/cni-genie/cni-genie/pkg/service/kubesvc"
	"github.com/cni-genie/cni-genie/pkg/store/kubestore"
	"github.com/cni-genie/cni-genie/pkg/testutil/kubeapi"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestServiceController runs `geniectl service controller` on the
// Kubernetes datastore of a real API server, as the chart does: elected
// (a Lease in kube-system here), with the token of a service account that
// has exactly the ClusterRole genie-service-controller, under
// deploy/policy. An annotated Service gets a VIP in the VPC it names,
// written back to the Service, and the VPC service exists in the store.
func TestServiceController(t *testing.T) {
	srv := kubeapi.New(t, kubeapi.Options{})
	if err := srv.InstallProjectCRDs(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := srv.InstallPolicies(t.Context()); err != nil {
		t.Fatal(err)
	}
	kubecfg := filepath.Join(t.TempDir(), "kubeconfig")
	if err := srv.WriteKubeconfig(kubecfg, ""); err != nil {
		t.Fatal(err)
	}
	base := []string{"--datastore", "kubernetes", "--kubeconfig", kubecfg}
	// The controller runs with exactly its ClusterRole (least privilege).
	cs, err := srv.Clientset()
	if err != nil {
		t.Fatal(err)
	}
	ctlNS := srv.CreateNamespace(t, "genie-svcctl")
	token, _, err := srv.ServiceAccountToken(t.Context(), ctlNS, kubestore.ServiceControllerAccount)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cs.RbacV1().ClusterRoleBindings().Create(t.Context(), &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: ctlNS},
		Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Name: kubestore.ServiceControllerAccount, Namespace: ctlNS}},
		RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "genie-service-controller"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	ctlcfg := filepath.Join(t.TempDir(), "controller.kubeconfig")
	if err := srv.WriteKubeconfig(ctlcfg, token); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"vpc", "create", "blue", "--cidr", "10.10.0.0/16"},
		{"subnet", "create", "blue/web", "--cidr", "10.10.1.0/24"},
	} {
		if out, code := run(t, append(append([]string{}, base...), args...)...); code != 0 {
			t.Fatalf("geniectl %v: exit %d:\n%s", args, code, out)
		}
	}

	ctx, cancel := context.WithCancel(t.Context())
	var out bytes.Buffer
	done := make(chan error, 1)
	go func() {
		root := NewCommand(&out, &out)
		root.SetArgs([]string{"--datastore", "kubernetes", "--kubeconfig", ctlcfg, "service", "controller", "--id", "replica-a"})
		done <- root.ExecuteContext(ctx)
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("service controller: %v\n%s", err, out.String())
		}
	}()

	ns := srv.CreateNamespace(t, "svcctl")
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "api", Annotations: map[string]string{kubesvc.AnnotationNetwork: "blue/web"}},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "api"},
			Ports: []corev1.ServicePort{{Port: 80, Protocol: corev1.ProtocolTCP}}},
	}
	if _, err := cs.CoreV1().Services(ns).Create(t.Context(), svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var vip string
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		s, err := cs.CoreV1().Services(ns).Get(t.Context(), "api", metav1.GetOptions{})
		if err == nil && s.Annotations[kubesvc.AnnotationVIP] != "" {
			vip = s.Annotations[kubesvc.AnnotationVIP]
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s annotation on the Service within 20 s; controller output:\n%s", kubesvc.AnnotationVIP, out.String())
		}
	}
	a, err := netip.ParseAddr(vip)
	if err != nil || !netip.MustParsePrefix("10.10.0.0/16").Contains(a) || netip.MustParsePrefix("10.10.1.0/24").Contains(a) {
		t.Fatalf("VIP %q: want an address of blue outside its subnet", vip)
	}
	list, code := run(t, append(append([]string{}, base...), "service", "list", "blue")...)
	if code != 0 || !bytes.Contains([]byte(list), []byte(vip)) {
		t.Errorf("service list blue (exit %d) lacks VIP %s:\n%s", code, vip, list)
	}
}
