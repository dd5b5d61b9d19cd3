package kubestore_test

import (
	"testing"

	"github.com/cni-genie/cni-genie/pkg/store/kubestore"
	"github.com/cni-genie/cni-genie/pkg/store/storetest"
)

// The egress gateway contract (store.EgressStore), on a real
// kube-apiserver, with the administrator's PolicyRules.
func TestEgressConformance(t *testing.T) {
	storetest.RunEgress(t, backend)
}

// Heartbeats (store.BeatStore) as a node agent writes them: the
// genie-agent role, Leases in its namespace.
func TestHeartbeats(t *testing.T) {
	srv := server(t)
	ns := agentNamespace(t, srv)
	agent, err := kubestore.NewForConfig(t.Context(), srv.RESTConfigForToken(agentIdentity(t, srv, ns, "")),
		kubestore.Options{Scope: scope(), LeaseNamespace: ns})
	if err != nil {
		t.Fatal(err)
	}
	defer agent.Close()
	storetest.RunHeartbeats(t, agent)
}
