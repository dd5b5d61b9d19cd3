package kubestore_test

import (
	"context"
	"sync"
	"testing"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"

	"github.com/cni-genie/cni-genie/pkg/store"
	"github.com/cni-genie/cni-genie/pkg/store/kubestore"
	"github.com/cni-genie/cni-genie/pkg/testutil/kubeapi"
)

func TestMain(m *testing.M) { kubeapi.Main(m) }

var crds struct {
	once sync.Once
	err  error
}

// server returns the shared real kube-apiserver with the project's CRDs
// installed (once per test binary).
func server(t testing.TB) *kubeapi.Server {
	t.Helper()
	srv := kubeapi.Shared(t)
	crds.once.Do(func() {
		crds.err = srv.InstallProjectCRDs(context.Background(), kubestore.CRDFiles...)
		if crds.err == nil {
			// Every test of the package, the conformance suite included,
			// runs under the deploy/policy admission policies.
			crds.err = installPolicies(srv)
		}
	})
	if crds.err != nil {
		t.Fatalf("install crds: %v", crds.err)
	}
	return srv
}

// scope returns a scope unique to the test, so tests sharing the server
// never see each other's objects.
func scope() string { return kubeapi.UniqueName("t") }

// open connects a new client (its own HTTP connections) to scope.
func open(t testing.TB, cfg *rest.Config, scope string) *kubestore.Store {
	t.Helper()
	s, err := kubestore.NewForConfig(t.Context(), cfg, kubestore.Options{Scope: scope})
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// backend is the conformance suite's view of the kube store: clients
// authenticated as a service account granted exactly PolicyRules.
func backend(t *testing.T) func() store.Store {
	cfg := limitedConfig(t)
	sc := scope()
	return func() store.Store { return open(t, cfg, sc) }
}

var limited struct {
	once  sync.Once
	ns    string // namespace of the service account "genie"
	token string
	err   error
}

// limitedConfig returns a config for the service account "genie" of a
// namespace of its own, bound to a ClusterRole of kubestore.PolicyRules
// (made once per test binary).
func limitedConfig(t *testing.T) *rest.Config {
	t.Helper()
	srv := server(t)
	limited.once.Do(func() {
		ctx := context.Background()
		cs, err := srv.Clientset()
		if err != nil {
			limited.err = err
			return
		}
		name := kubeapi.UniqueName("genie-store")
		limited.ns = name
		if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
			limited.err = err
			return
		}
		cr := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: name}, Rules: kubestore.PolicyRules()}
		if _, err := cs.RbacV1().ClusterRoles().Create(ctx, cr, metav1.CreateOptions{}); err != nil {
			limited.err = err
			return
		}
		crb := &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: name},
			Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Name: "genie", Namespace: name}},
			RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: name}}
		if _, err := cs.RbacV1().ClusterRoleBindings().Create(ctx, crb, metav1.CreateOptions{}); err != nil {
			limited.err = err
			return
		}
		limited.token, _, limited.err = srv.ServiceAccountToken(ctx, name, "genie")
	})
	if limited.err != nil {
		t.Fatalf("service account with kubestore.PolicyRules: %v", limited.err)
	}
	return srv.RESTConfigForToken(limited.token)
}
