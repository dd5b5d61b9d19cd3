package kubestore_test

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/cni-genie/cni-genie/pkg/service"
	"github.com/cni-genie/cni-genie/pkg/service/resolver"
	"github.com/cni-genie/cni-genie/pkg/store"
	"github.com/cni-genie/cni-genie/pkg/store/kubestore"
	"github.com/cni-genie/cni-genie/pkg/store/storetest"
	"github.com/cni-genie/cni-genie/pkg/vpc"
)

// The service contract (store.ServiceStore), on a real kube-apiserver,
// with the administrator's PolicyRules.
func TestServiceConformance(t *testing.T) {
	storetest.RunServices(t, backend)
}

// The elected resolver on the Kubernetes datastore, as a node agent runs
// it (the genie-agent role, its Lease): endpoints keep their pods' labels
// and the service's record lists exactly the selected ones.
func TestResolverOnKubestore(t *testing.T) {
	srv := server(t)
	sc := scope()
	admin := open(t, limitedConfig(t), sc)
	ns := agentNamespace(t, srv)
	agent, err := kubestore.NewForConfig(t.Context(), srv.RESTConfigForToken(agentIdentity(t, srv, ns, "")),
		kubestore.Options{Scope: sc, LeaseNamespace: ns, LeaseDuration: 4 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer agent.Close()
	storetest.MustVPC(t, admin, "blue", "10.0.0.0/16")
	storetest.MustSubnet(t, admin, "blue", "pods", "10.0.0.0/24")
	sv := service.Service{VPC: "blue", Name: "web", Ports: []service.Port{{Port: 80, Protocol: service.TCP}}, Selector: map[string]string{"app": "web"}}
	if _, err := admin.CreateService(t.Context(), sv); err != nil {
		t.Fatal(err)
	}
	put := func(id, ip string, labels map[string]string) {
		t.Helper()
		a := netip.MustParseAddr(ip)
		if _, err := admin.ClaimBlockContaining(t.Context(), "blue", "pods", "n1", a); err != nil {
			t.Fatal(err)
		}
		if _, err := admin.PutEndpoint(t.Context(), vpc.Endpoint{VPC: "blue", Subnet: "pods", ID: id, IP: a, Node: "n1",
			MAC: net.HardwareAddr{2, 0, 0, 0, 0, a.As4()[3]}, Labels: labels}); err != nil {
			t.Fatal(err)
		}
	}
	put("c1/eth1", "10.0.0.2", map[string]string{"app": "web", "tier": "a"})
	put("c2/eth1", "10.0.0.3", map[string]string{"app": "db"})
	if e, err := admin.GetEndpoint(t.Context(), "blue", "c1/eth1"); err != nil || e.Labels["app"] != "web" || e.Labels["tier"] != "a" {
		t.Fatalf("endpoint = %+v, %v; want its labels back", e, err)
	}

	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = (&resolver.Resolver{Store: agent, ID: "n1"}).RunElected(ctx)
	}()
	defer func() { cancel(); <-done }()
	want := func(ips ...string) {
		t.Helper()
		var got []string
		for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
			recs, _, err := admin.ListServiceBackends(t.Context(), "blue")
			if err != nil {
				t.Fatal(err)
			}
			got = nil
			for _, r := range recs {
				for _, b := range r.Backends {
					got = append(got, b.IP.String())
				}
			}
			if len(recs) == 1 && slices.Equal(got, ips) {
				return
			}
		}
		t.Fatalf("backends of blue/web = %v, want %v", got, ips)
	}
	want("10.0.0.2")
	put("c3/eth1", "10.0.0.4", map[string]string{"app": "web"})
	want("10.0.0.2", "10.0.0.4")
}

// A VIP claim left without its service (a create or delete interrupted
// between its two writes) holds the VIP while it may belong to a create in
// flight, and is collected once stale.
func TestServiceStaleVIPClaim(t *testing.T) {
	srv := server(t)
	sc := scope()
	s := open(t, limitedConfig(t), sc)
	storetest.MustVPC(t, s, "blue", "10.0.0.0/16")
	claim := raw("VPCServiceVIP", sc+".blue.10-0-7-7", sc, map[string]any{"vpc": "blue", "service": "ghost", "vip": "10.0.7.7"})
	claim.SetLabels(map[string]string{kubestore.LabelScope: sc, kubestore.LabelVPC: "blue"})
	if _, err := dyn(t, srv.RESTConfig()).Resource(gvr("vpcservicevips")).Create(t.Context(), claim, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	sv := service.Service{VPC: "blue", Name: "web", VIP: netip.MustParseAddr("10.0.7.7"), Ports: []service.Port{{Port: 80, Protocol: service.TCP}}}
	_, err := s.CreateService(t.Context(), sv)
	if !errors.Is(err, store.ErrConflict) || !strings.Contains(err.Error(), `service "blue/ghost"`) {
		t.Fatalf("create over a fresh claim = %v, want a conflict naming blue/ghost", err)
	}
	kubestore.SetVIPStaleAfter(s, time.Millisecond)
	if got, err := s.CreateService(t.Context(), sv); err != nil || got.VIP != sv.VIP {
		t.Fatalf("create over a stale claim = %+v, %v; want it collected and the vip taken", got, err)
	}
	c, err := dyn(t, srv.RESTConfig()).Resource(gvr("vpcservicevips")).Get(t.Context(), claim.GetName(), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if svc, _, _ := unstructured.NestedString(c.Object, "spec", "service"); svc != "web" {
		t.Errorf("claim of 10.0.7.7 names %q, want web", svc)
	}
}
