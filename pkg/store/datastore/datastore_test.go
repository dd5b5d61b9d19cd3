package datastore_test

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/cni-genie/cni-genie/pkg/store"
	"github.com/cni-genie/cni-genie/pkg/store/datastore"
	"github.com/cni-genie/cni-genie/pkg/store/etcdstore/etcdtest"
	"github.com/cni-genie/cni-genie/pkg/store/kubestore"
	"github.com/cni-genie/cni-genie/pkg/testutil/kubeapi"
	"github.com/cni-genie/cni-genie/pkg/vpc"
)

func TestMain(m *testing.M) { kubeapi.Main(m) }

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		c    datastore.Config
		want string // error substring; "" = valid
	}{
		{"default is etcd", datastore.Config{EtcdEndpoints: []string{"http://127.0.0.1:2379"}}, ""},
		{"etcd without endpoints", datastore.Config{Backend: "etcd"}, "datastore etcd: no store endpoint"},
		{"kubernetes in-cluster", datastore.Config{Backend: "kubernetes"}, ""},
		{"kubernetes ignores etcd endpoints", datastore.Config{Backend: "kubernetes", EtcdEndpoints: []string{"x"}}, ""},
		{"unknown", datastore.Config{Backend: "consul"}, `datastore "consul": unknown, want one of etcd, kubernetes`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.c.Validate()
			if tc.want == "" && err != nil {
				t.Fatalf("Validate: %v", err)
			}
			if tc.want != "" && (err == nil || err.Error() != tc.want) {
				t.Fatalf("Validate = %v, want %q", err, tc.want)
			}
		})
	}
	if _, err := datastore.ParseBackend("Kubernetes"); err == nil {
		t.Fatal("ParseBackend accepted a wrongly cased name")
	}
	for _, b := range datastore.Backends() {
		if got, err := datastore.ParseBackend(b); err != nil || got != b {
			t.Fatalf("ParseBackend(%q) = %q, %v", b, got, err)
		}
	}
}

func TestSplitEndpointsAndDefaultKubeconfig(t *testing.T) {
	got := datastore.SplitEndpoints(" http://a:1, ,unix:///b ,")
	if strings.Join(got, "|") != "http://a:1|unix:///b" {
		t.Fatalf("SplitEndpoints = %q", got)
	}
	t.Setenv("KUBECONFIG", "/a/config"+string(os.PathListSeparator)+"/b/config")
	if got := datastore.DefaultKubeconfig(); got != "/a/config" {
		t.Fatalf("DefaultKubeconfig = %q, want the first file of the list", got)
	}
}

// TestOpenErrors: a backend that cannot be reached fails Open with a
// message naming the backend and where it was looked for.
func TestOpenErrors(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "nope.kubeconfig")
	_, err := datastore.Open(t.Context(), datastore.Config{Backend: datastore.Kubernetes, Kubeconfig: missing})
	if err == nil || !strings.Contains(err.Error(), "open datastore kubernetes (kubeconfig "+missing+")") {
		t.Fatalf("Open with a missing kubeconfig = %v", err)
	}
	if _, err := datastore.Open(t.Context(), datastore.Config{Backend: "zk"}); err == nil {
		t.Fatal("Open accepted an unknown backend")
	}
}

// TestOpenEtcd opens the etcd backend against a real embedded etcd.
func TestOpenEtcd(t *testing.T) {
	if testing.Short() {
		t.Skip("short mode: starts an embedded etcd")
	}
	srv, err := etcdtest.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	st, err := datastore.Open(t.Context(), datastore.Config{EtcdEndpoints: srv.Endpoints()})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	roundTrip(t, st, kubeapi.UniqueName("etcd"))
	if _, ok := st.(store.VPCWatcher); ok {
		t.Fatal("the etcd backend claims VPCWatcher; the agent would take the filtered path")
	}
}

// TestOpenKubernetes opens the Kubernetes backend on a real kube-apiserver
// as a service account granted exactly kubestore.PolicyRules().
func TestOpenKubernetes(t *testing.T) {
	srv := kubeapi.Shared(t)
	if err := srv.InstallProjectCRDs(t.Context()); err != nil {
		t.Fatal(err)
	}
	kubecfg := policyKubeconfig(t, srv)
	st, err := datastore.Open(t.Context(), datastore.Config{Backend: datastore.Kubernetes, Kubeconfig: kubecfg})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	name := kubeapi.UniqueName("kube")
	roundTrip(t, st, name)
	if _, ok := st.(store.VPCWatcher); !ok {
		t.Fatal("the kubernetes backend does not offer VPCWatcher")
	}
}

func roundTrip(t *testing.T, st store.Store, name string) {
	t.Helper()
	v, err := st.CreateVPC(t.Context(), vpc.VPC{Name: name, CIDR: netip.MustParsePrefix("10.9.0.0/16")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.DeleteVPC(context.Background(), name) })
	got, err := st.GetVPC(t.Context(), name)
	if err != nil || got.VNI != v.VNI || got.VNI == 0 {
		t.Fatalf("GetVPC = %+v, %v; created %+v", got, err, v)
	}
	if err := st.DeleteVPC(t.Context(), name); err != nil {
		t.Fatal(err)
	}
	if _, err := st.GetVPC(t.Context(), name); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("GetVPC after delete = %v, want ErrNotFound", err)
	}
}

// policyKubeconfig writes a kubeconfig for a fresh service account bound
// to a ClusterRole of exactly kubestore.PolicyRules().
func policyKubeconfig(t *testing.T, srv *kubeapi.Server) string {
	t.Helper()
	admin, err := srv.Clientset()
	if err != nil {
		t.Fatal(err)
	}
	nsName := srv.CreateNamespace(t, "datastore")
	role := kubeapi.UniqueName("genie-store")
	cr := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: role}, Rules: kubestore.PolicyRules()}
	if _, err := admin.RbacV1().ClusterRoles().Create(t.Context(), cr, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { admin.RbacV1().ClusterRoles().Delete(context.Background(), role, metav1.DeleteOptions{}) })
	crb := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: role},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: role},
		Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: "genie", Namespace: nsName}},
	}
	if _, err := admin.RbacV1().ClusterRoleBindings().Create(t.Context(), crb, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		admin.RbacV1().ClusterRoleBindings().Delete(context.Background(), role, metav1.DeleteOptions{})
	})
	tok, revoke, err := srv.ServiceAccountToken(t.Context(), nsName, "genie")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { revoke(context.Background()) })
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := kubeapi.WriteKubeconfig(path, srv.URL, srv.CAData, tok); err != nil {
		t.Fatal(err)
	}
	return path
}
