package cli

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/cni-genie/cni-genie/pkg/store/kubestore"
	"github.com/cni-genie/cni-genie/pkg/testutil/kubeapi"
)

func TestDatastoreFlagErrors(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "nope.kubeconfig")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"vpc", "list", "--datastore", "consul"}, `--datastore: datastore "consul": unknown, want one of etcd, kubernetes`},
		{[]string{"vpc", "list", "--datastore", "kubernetes", "--kubeconfig", missing}, "open datastore kubernetes (kubeconfig " + missing + ")"},
	} {
		out, code := run(t, tc.args...)
		if code == 0 || !strings.Contains(out, tc.want) {
			t.Errorf("geniectl %v: exit %d, want error with %q:\n%s", tc.args, code, tc.want, out)
		}
	}
	// GENIE_DATASTORE selects the default.
	t.Setenv("GENIE_DATASTORE", "kubernetes")
	t.Setenv("KUBECONFIG", missing)
	if out, code := run(t, "vpc", "list"); code == 0 || !strings.Contains(out, "kubeconfig "+missing) {
		t.Errorf("GENIE_DATASTORE=kubernetes KUBECONFIG=%s geniectl vpc list: exit %d:\n%s", missing, code, out)
	}
}

// TestKubernetesDatastore runs the vpc, subnet and status commands against
// a real kube-apiserver, as a service account granted exactly
// kubestore.PolicyRules().
func TestKubernetesDatastore(t *testing.T) {
	srv := kubeapi.New(t, kubeapi.Options{})
	if err := srv.InstallProjectCRDs(t.Context()); err != nil {
		t.Fatal(err)
	}
	kubecfg := storeKubeconfig(t, srv)
	base := []string{"--datastore", "kubernetes", "--kubeconfig", kubecfg}
	must := func(args ...string) string {
		t.Helper()
		out, code := run(t, append(append([]string{}, base...), args...)...)
		if code != 0 {
			t.Fatalf("geniectl %v: exit %d:\n%s", args, code, out)
		}
		return out
	}
	fail := func(want string, args ...string) {
		t.Helper()
		out, code := run(t, append(append([]string{}, base...), args...)...)
		if code == 0 || !strings.Contains(out, want) {
			t.Errorf("geniectl %v: exit %d, want error with %q:\n%s", args, code, want, out)
		}
	}
	must("vpc", "create", "blue", "--cidr", "10.10.0.0/16")
	fail("already exists", "vpc", "create", "blue", "--cidr", "10.20.0.0/16")
	out := must("subnet", "create", "blue/web", "--cidr", "10.10.1.0/24")
	if !strings.Contains(out, "10.10.1.1") {
		t.Errorf("default gateway missing:\n%s", out)
	}
	fail("overlaps", "subnet", "create", "blue/db", "--cidr", "10.10.1.128/25")
	if out := must("vpc", "list"); !strings.Contains(out, "blue") || !strings.Contains(out, "10.10.0.0/16") {
		t.Errorf("vpc list:\n%s", out)
	}
	out = must("status", "--json")
	var cs ClusterStatus
	if err := json.Unmarshal([]byte(out), &cs); err != nil {
		t.Fatalf("status --json: %v:\n%s", err, out)
	}
	if len(cs.VPCs) != 1 || cs.VPCs[0].Name != "blue" || len(cs.Subnets) != 1 || cs.Subnets[0].Name != "web" {
		t.Errorf("status --json: %+v", cs)
	}
	fail("in use", "vpc", "delete", "blue")
	// Services: list and status show VIP, ports, selector and the
	// resolver's backends on this datastore too.
	st, err := kubestore.New(t.Context(), kubecfg, kubestore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	checkServiceListing(t, st, func(args ...string) (string, int) {
		return run(t, append(append([]string{}, base...), args...)...)
	})
	must("service", "delete", "blue/api")
	for _, id := range []string{"c0/eth1", "c1/eth1"} {
		if err := st.DeleteEndpoint(t.Context(), "blue", id); err != nil {
			t.Fatal(err)
		}
	}
	if out := must("service", "list"); strings.Contains(out, "blue/api") {
		t.Errorf("deleted service listed:\n%s", out)
	}
	must("subnet", "delete", "blue/web")
	must("vpc", "delete", "blue")
	if out := must("vpc", "list"); strings.Contains(out, "blue") {
		t.Errorf("blue still listed:\n%s", out)
	}
}

// storeKubeconfig writes a kubeconfig for a service account bound to a
// ClusterRole of exactly kubestore.PolicyRules().
func storeKubeconfig(t *testing.T, srv *kubeapi.Server) string {
	t.Helper()
	admin, err := srv.Clientset()
	if err != nil {
		t.Fatal(err)
	}
	nsName := srv.CreateNamespace(t, "geniectl")
	role := kubeapi.UniqueName("geniectl")
	cr := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: role}, Rules: kubestore.PolicyRules()}
	if _, err := admin.RbacV1().ClusterRoles().Create(t.Context(), cr, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	crb := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: role},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: role},
		Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: "geniectl", Namespace: nsName}},
	}
	if _, err := admin.RbacV1().ClusterRoleBindings().Create(t.Context(), crb, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	tok, revoke, err := srv.ServiceAccountToken(t.Context(), nsName, "geniectl")
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
