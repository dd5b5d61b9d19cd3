package kubestore_test

import (
	"context"
	"sync"
	"testing"

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
	crds.once.Do(func() { crds.err = srv.InstallProjectCRDs(context.Background(), kubestore.CRDFiles...) })
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

// backend is the conformance suite's view of the kube store.
func backend(t *testing.T) func() store.Store {
	cfg := server(t).RESTConfig()
	sc := scope()
	return func() store.Store { return open(t, cfg, sc) }
}
