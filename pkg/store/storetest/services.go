package storetest

import (
	"errors"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/cni-genie/cni-genie/pkg/service"
	"github.com/cni-genie/cni-genie/pkg/store"
	"github.com/cni-genie/cni-genie/pkg/vpc"
)

// RunServices runs the conformance tests of store.ServiceStore against b,
// whose stores must implement it.
func RunServices(t *testing.T, b Backend) {
	for _, tc := range []struct {
		name string
		f    func(*testing.T, func() store.Store)
	}{
		{"ServiceLifecycle", testServiceLifecycle},
		{"ServiceInvalid", testServiceInvalid},
		{"ServiceVIPConcurrent", testServiceVIPConcurrent},
		{"SubnetCoveringVIP", testSubnetCoveringVIP},
		{"SubnetVIPConcurrent", testSubnetVIPConcurrent},
		{"ServiceBackendsAndWatch", testServiceBackendsAndWatch},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.f(t, b(t))
		})
	}
}

func services(t *testing.T, s store.Store) store.ServiceStore {
	t.Helper()
	ss, ok := s.(store.ServiceStore)
	if !ok {
		t.Fatalf("%T does not implement store.ServiceStore", s)
	}
	return ss
}

func webService(v string, vip string) service.Service {
	sv := service.Service{VPC: v, Name: "web", Ports: []service.Port{{Port: 80, Protocol: service.TCP, TargetPort: 8080}}, Selector: map[string]string{"app": "web"}}
	if vip != "" {
		sv.VIP = netip.MustParseAddr(vip)
	}
	return sv
}

func testServiceLifecycle(t *testing.T, open func() store.Store) {
	ctx := t.Context()
	s := open()
	ss := services(t, s)
	MustVPC(t, s, "blue", "10.0.0.0/16")
	MustVPC(t, s, "red", "10.0.0.0/16")
	MustSubnet(t, s, "blue", "web", "10.0.0.0/24")

	got, err := ss.CreateService(ctx, webService("blue", ""))
	if err != nil {
		t.Fatal(err)
	}
	first := netip.MustParseAddr("10.0.255.254") // the top of blue 10.0.0.0/16
	if got.VIP != first || got.Ports[0].TargetPort != 8080 || got.TableSize != service.DefaultTableSize {
		t.Fatalf("created %+v, want vip %s allocated and defaults filled", got, first)
	}
	// The same name and VIP in another VPC: allowed.
	if _, err := ss.CreateService(ctx, webService("red", first.String())); err != nil {
		t.Fatalf("same vip in another vpc: %v", err)
	}
	_, err = ss.CreateService(ctx, webService("blue", "10.0.9.9"))
	wantErr(t, "duplicate name", err, store.ErrExists, `service "blue/web"`)
	api := webService("blue", "")
	api.Name = "api"
	if a, err := ss.CreateService(ctx, api); err != nil || a.VIP != first.Prev() {
		t.Fatalf("second allocation = %+v, %v; want %s", a, err, first.Prev())
	}
	if g, err := ss.GetService(ctx, "blue", "web"); err != nil || g.VIP != got.VIP {
		t.Fatalf("get = %+v, %v", g, err)
	}
	list, _, err := ss.ListServices(ctx, "blue")
	if err != nil || len(list) != 2 || list[0].Name != "api" || list[1].Name != "web" {
		t.Fatalf("list blue = %+v, %v", list, err)
	}
	all, _, err := ss.ListServices(ctx, "")
	if err != nil || len(all) != 3 {
		t.Fatalf("list all = %d services, %v; want 3", len(all), err)
	}
	if err := ss.DeleteService(ctx, "blue", "web"); err != nil {
		t.Fatal(err)
	}
	wantErr(t, "delete twice", ss.DeleteService(ctx, "blue", "web"), store.ErrNotFound, `service "blue/web"`)
	_, err = ss.GetService(ctx, "blue", "web")
	wantErr(t, "get deleted", err, store.ErrNotFound, `service "blue/web"`)
	// The freed VIP is allocated again.
	if g, err := ss.CreateService(ctx, webService("blue", "")); err != nil || g.VIP != first {
		t.Fatalf("re-create = %+v, %v; want the freed %s", g, err, first)
	}
}

func testServiceInvalid(t *testing.T, open func() store.Store) {
	ctx := t.Context()
	s := open()
	ss := services(t, s)
	MustVPC(t, s, "blue", "10.0.0.0/16")
	MustSubnet(t, s, "blue", "web", "10.0.0.0/24")
	if _, err := ss.CreateService(ctx, webService("blue", "10.0.200.10")); err != nil {
		t.Fatal(err)
	}
	_, err := ss.CreateService(ctx, webService("nope", ""))
	wantErr(t, "unknown vpc", err, store.ErrNotFound, `vpc "nope"`)
	sv := webService("blue", "10.0.0.50")
	sv.Name = "in-subnet"
	_, err = ss.CreateService(ctx, sv)
	wantErr(t, "vip inside a subnet", err, store.ErrConflict, `subnet "blue/web"`)
	sv = webService("blue", "10.0.200.10")
	sv.Name = "taken"
	_, err = ss.CreateService(ctx, sv)
	wantErr(t, "vip held by another service", err, store.ErrConflict, `service "blue/web"`)
	sv = webService("blue", "10.96.0.10")
	sv.Name = "outside"
	_, err = ss.CreateService(ctx, sv)
	wantErr(t, "vip outside the vpc", err, vpc.ErrInvalid, `outside vpc "blue"`)
	sv = webService("blue", "")
	sv.Name = "clash"
	sv.Ports = append(sv.Ports, service.Port{Port: 80, Protocol: service.TCP, TargetPort: 9090})
	_, err = ss.CreateService(ctx, sv)
	wantErr(t, "port clash", err, vpc.ErrInvalid, "port clash")
	list, _, err := ss.ListServices(ctx, "blue")
	if err != nil || len(list) != 1 {
		t.Fatalf("after refusals: %d services, %v; want 1", len(list), err)
	}
}

// testServiceVIPConcurrent: clients racing for one VIP of a VPC, and for
// allocated VIPs, never end with a VIP held twice.
func testServiceVIPConcurrent(t *testing.T, open func() store.Store) {
	ctx := t.Context()
	s := open()
	MustVPC(t, s, "blue", "10.0.0.0/16")
	const n = 6
	var wg sync.WaitGroup
	errs := make([]error, 2*n)
	for i := 0; i < n; i++ {
		c := services(t, open())
		wg.Add(2)
		go func() {
			defer wg.Done()
			sv := webService("blue", "10.0.5.5")
			sv.Name = "same-" + string(rune('a'+i))
			_, errs[i] = c.CreateService(ctx, sv)
		}()
		go func() {
			defer wg.Done()
			sv := webService("blue", "")
			sv.Name = "auto-" + string(rune('a'+i))
			_, errs[n+i] = c.CreateService(ctx, sv)
		}()
	}
	wg.Wait()
	won := 0
	for i, err := range errs {
		switch {
		case err == nil:
			if i < n {
				won++
			}
		case i < n && errors.Is(err, store.ErrConflict):
		default:
			t.Errorf("create %d: %v", i, err)
		}
	}
	if won != 1 {
		t.Errorf("%d clients got vip 10.0.5.5, want exactly 1", won)
	}
	list, _, err := services(t, s).ListServices(ctx, "blue")
	if err != nil {
		t.Fatal(err)
	}
	held := map[netip.Addr]string{}
	for _, sv := range list {
		if o, dup := held[sv.VIP]; dup {
			t.Errorf("vip %s held by %s and %s", sv.VIP, o, sv.Name)
		}
		held[sv.VIP] = sv.Name
	}
	if len(list) != n+1 {
		t.Errorf("%d services, want %d", len(list), n+1)
	}
}

// testSubnetCoveringVIP: a subnet created after a service may not take
// its VIP (the other direction of "a VIP outside every subnet").
func testSubnetCoveringVIP(t *testing.T, open func() store.Store) {
	ctx := t.Context()
	s := open()
	ss := services(t, s)
	MustVPC(t, s, "blue", "10.0.0.0/16")
	MustVPC(t, s, "red", "10.0.0.0/16")
	if _, err := ss.CreateService(ctx, webService("blue", "10.0.7.7")); err != nil {
		t.Fatal(err)
	}
	_, err := s.CreateSubnet(ctx, vpc.Subnet{VPC: "blue", Name: "wide", CIDR: netip.MustParsePrefix("10.0.0.0/21")})
	wantErr(t, "subnet covering a vip", err, store.ErrConflict, `subnet "blue/wide" 10.0.0.0/21 covers vip 10.0.7.7 of service "blue/web"`)
	if _, err := s.GetSubnet(ctx, "blue", "wide"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("refused subnet exists: %v", err)
	}
	// The same range in another VPC, and beside the VIP: allowed.
	MustSubnet(t, s, "red", "wide", "10.0.0.0/21")
	MustSubnet(t, s, "blue", "low", "10.0.0.0/22")
	// Once the service is gone, its VIP's range is free.
	if err := ss.DeleteService(ctx, "blue", "web"); err != nil {
		t.Fatal(err)
	}
	MustSubnet(t, s, "blue", "high", "10.0.4.0/22")
}

// testSubnetVIPConcurrent: a service at a VIP and a subnet covering it,
// created at the same time by two clients, never both succeed.
func testSubnetVIPConcurrent(t *testing.T, open func() store.Store) {
	ctx := t.Context()
	s := open()
	MustVPC(t, s, "blue", "10.0.0.0/16")
	const rounds = 4
	for i := 0; i < rounds; i++ {
		vip := netip.AddrFrom4([4]byte{10, 0, byte(16 + i), 9})
		cidr := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 0, byte(16 + i), 0}), 24)
		sv := webService("blue", vip.String())
		sv.Name = "race-" + string(rune('a'+i))
		var svcErr, subErr error
		var wg sync.WaitGroup
		wg.Add(2)
		c1, c2 := services(t, open()), open()
		go func() { defer wg.Done(); _, svcErr = c1.CreateService(ctx, sv) }()
		go func() {
			defer wg.Done()
			_, subErr = c2.CreateSubnet(ctx, vpc.Subnet{VPC: "blue", Name: sv.Name, CIDR: cidr})
		}()
		wg.Wait()
		for what, err := range map[string]error{"service": svcErr, "subnet": subErr} {
			if err != nil && !errors.Is(err, store.ErrConflict) {
				t.Errorf("round %d: %s: %v", i, what, err)
			}
		}
		if svcErr == nil && subErr == nil {
			t.Errorf("round %d: service at %s and subnet %s both created", i, vip, cidr)
		}
	}
}

func testServiceBackendsAndWatch(t *testing.T, open func() store.Store) {
	ctx := t.Context()
	s := open()
	ss := services(t, s)
	MustVPC(t, s, "blue", "10.0.0.0/16")
	MustVPC(t, s, "red", "10.0.0.0/16")
	_, rev, err := ss.ListServices(ctx, "blue")
	if err != nil {
		t.Fatal(err)
	}
	ch := ss.WatchServices(ctx, "blue", rev)
	if _, err := ss.CreateService(ctx, webService("red", "")); err != nil {
		t.Fatal(err)
	}
	if _, err := ss.CreateService(ctx, webService("blue", "")); err != nil {
		t.Fatal(err)
	}
	b := service.Backends{VPC: "blue", Service: "web", Backends: []service.Backend{{IP: netip.MustParseAddr("10.0.0.2"), Node: "n1", Endpoint: "c/eth1"}}}
	if err := ss.PutServiceBackends(ctx, b); err != nil {
		t.Fatal(err)
	}
	err = ss.PutServiceBackends(ctx, service.Backends{VPC: "blue", Service: "nope"})
	wantErr(t, "backends of a missing service", err, store.ErrNotFound, `service "blue/nope"`)
	got, _, err := ss.ListServiceBackends(ctx, "blue")
	if err != nil || len(got) != 1 || got[0].Backends[0].Node != "n1" {
		t.Fatalf("list backends = %+v, %v", got, err)
	}
	if err := ss.DeleteService(ctx, "blue", "web"); err != nil {
		t.Fatal(err)
	}
	if got, _, _ := ss.ListServiceBackends(ctx, "blue"); len(got) != 0 {
		t.Errorf("backends survive their service: %+v", got)
	}

	// Only blue's changes, in order: service put, backends put, and the
	// deletion of both.
	var seen []string
	deadline := time.After(EventTimeout)
	for len(seen) < 4 {
		select {
		case ev, ok := <-ch:
			if !ok {
				t.Fatalf("watch closed after %v", seen)
			}
			if ev.Type == store.EventError {
				t.Fatalf("watch error: %v", ev.Err)
			}
			switch {
			case ev.Service != nil && ev.Service.VPC == "blue":
				seen = append(seen, ev.Type.String()+" service")
			case ev.Backends != nil && ev.Backends.VPC == "blue":
				seen = append(seen, ev.Type.String()+" backends")
			default:
				t.Fatalf("unexpected event %+v", ev)
			}
		case <-deadline:
			t.Fatalf("watch: only %v", seen)
		}
	}
	if seen[0] != "put service" || seen[1] != "put backends" || seen[2][:6] != "delete" || seen[3][:6] != "delete" {
		t.Errorf("events %v", seen)
	}
}
