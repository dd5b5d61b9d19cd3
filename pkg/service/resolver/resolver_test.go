package resolver

import (
	"context"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/cni-genie/cni-genie/pkg/service"
	"github.com/cni-genie/cni-genie/pkg/store"
	"github.com/cni-genie/cni-genie/pkg/store/etcdstore/etcdtest"
	"github.com/cni-genie/cni-genie/pkg/store/storetest"
	"github.com/cni-genie/cni-genie/pkg/vpc"
)

var srv *etcdtest.Server

func TestMain(m *testing.M) { etcdtest.Main(m, &srv) }

func putEndpoint(t *testing.T, s store.Store, v, id, ip, node string, labels map[string]string) {
	t.Helper()
	a := netip.MustParseAddr(ip)
	if _, err := s.ClaimBlockContaining(t.Context(), v, "pods", node, a); err != nil {
		t.Fatal(err)
	}
	_, err := s.PutEndpoint(t.Context(), vpc.Endpoint{VPC: v, Subnet: "pods", ID: id, IP: a, Node: node,
		MAC: net.HardwareAddr{2, 0, 0, 0, 0, a.As4()[3]}, Labels: labels})
	if err != nil {
		t.Fatal(err)
	}
}

// waitBackends waits until the record of vpc/web lists exactly ips.
func waitBackends(t *testing.T, ss store.ServiceStore, v string, ips ...string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	var got []string
	for time.Now().Before(deadline) {
		recs, _, err := ss.ListServiceBackends(t.Context(), v)
		if err != nil {
			t.Fatal(err)
		}
		got = nil
		for _, r := range recs {
			for _, b := range r.Backends {
				got = append(got, b.IP.String())
			}
		}
		if slices.Equal(got, ips) {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("backends of %s/web = %v, want %v", v, got, ips)
}

// Two candidates: the leader resolves selectors per VPC (same addresses in
// two VPCs stay apart); when it stops, the other takes over.
func TestResolverElectedFailover(t *testing.T) {
	prefix := etcdtest.UniquePrefix(t)
	s := srv.NewStore(t, prefix)
	var ss store.ServiceStore = s
	for _, v := range []string{"blue", "red"} {
		storetest.MustVPC(t, s, v, "10.0.0.0/16")
		storetest.MustSubnet(t, s, v, "pods", "10.0.0.0/24")
		sv := service.Service{VPC: v, Name: "web", Ports: []service.Port{{Port: 80, Protocol: service.TCP}}, Selector: map[string]string{"app": "web"}}
		if _, err := ss.CreateService(t.Context(), sv); err != nil {
			t.Fatal(err)
		}
	}
	putEndpoint(t, s, "blue", "c1/eth1", "10.0.0.2", "n1", map[string]string{"app": "web"})
	putEndpoint(t, s, "blue", "c2/eth1", "10.0.0.20", "n2", map[string]string{"app": "db"})
	putEndpoint(t, s, "red", "c3/eth1", "10.0.0.3", "n1", map[string]string{"app": "web"})

	ctx1, stop1 := context.WithCancel(t.Context())
	done1 := make(chan struct{})
	go func() {
		defer close(done1)
		r := &Resolver{Store: srv.NewStore(t, prefix), ID: "n1"}
		_ = r.RunElected(ctx1)
	}()
	waitBackends(t, ss, "blue", "10.0.0.2")
	waitBackends(t, ss, "red", "10.0.0.3")

	ctx2, stop2 := context.WithCancel(t.Context())
	defer stop2()
	go func() {
		r := &Resolver{Store: srv.NewStore(t, prefix), ID: "n2"}
		_ = r.RunElected(ctx2)
	}()
	putEndpoint(t, s, "blue", "c4/eth1", "10.0.0.21", "n2", map[string]string{"app": "web"})
	waitBackends(t, ss, "blue", "10.0.0.2", "10.0.0.21")

	stop1()
	<-done1
	// n2 leads now: a removed backend disappears from the record.
	if err := s.DeleteEndpoint(t.Context(), "blue", "c1/eth1"); err != nil {
		t.Fatal(err)
	}
	waitBackends(t, ss, "blue", "10.0.0.21")
	waitBackends(t, ss, "red", "10.0.0.3")
}

// The leader keeps only the endpoints of VPCs that have a service: a VPC
// whose first service comes later is listed then (endpoints from before
// included) and follows its watch events from that listing on; after its
// last service went (its endpoints dropped), the next is resolved from a
// fresh listing. (Fails when track does not list: nothing from before the
// service is found.)
func TestResolverTracksVPCsWithServices(t *testing.T) {
	prefix := etcdtest.UniquePrefix(t)
	s := srv.NewStore(t, prefix)
	var ss store.ServiceStore = s
	storetest.MustVPC(t, s, "green", "10.0.0.0/16")
	storetest.MustSubnet(t, s, "green", "pods", "10.0.0.0/24")
	putEndpoint(t, s, "green", "c1/eth1", "10.0.0.2", "n1", map[string]string{"app": "web"})

	ctx, stop := context.WithCancel(t.Context())
	defer stop()
	done := make(chan struct{})
	go func() {
		defer close(done)
		r := &Resolver{Store: srv.NewStore(t, prefix), ID: "n1", Settle: 10 * time.Millisecond}
		_ = r.Run(ctx)
	}()
	defer func() { stop(); <-done }()
	// An endpoint event while green has no service: not tracked.
	putEndpoint(t, s, "green", "c2/eth1", "10.0.0.3", "n1", map[string]string{"app": "web"})
	sv := service.Service{VPC: "green", Name: "web", Ports: []service.Port{{Port: 80, Protocol: service.TCP}}, Selector: map[string]string{"app": "web"}}
	if _, err := ss.CreateService(t.Context(), sv); err != nil {
		t.Fatal(err)
	}
	waitBackends(t, ss, "green", "10.0.0.2", "10.0.0.3")
	putEndpoint(t, s, "green", "c3/eth1", "10.0.0.4", "n1", map[string]string{"app": "web"})
	waitBackends(t, ss, "green", "10.0.0.2", "10.0.0.3", "10.0.0.4")
	// The last service goes, an endpoint goes meanwhile, the service
	// comes back: the new listing has no trace of the removed endpoint.
	if err := ss.DeleteService(t.Context(), "green", "web"); err != nil {
		t.Fatal(err)
	}
	waitBackends(t, ss, "green")
	if err := s.DeleteEndpoint(t.Context(), "green", "c1/eth1"); err != nil {
		t.Fatal(err)
	}
	if _, err := ss.CreateService(t.Context(), sv); err != nil {
		t.Fatal(err)
	}
	waitBackends(t, ss, "green", "10.0.0.3", "10.0.0.4")
}
