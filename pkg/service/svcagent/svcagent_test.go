package svcagent

import (
	"context"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/cni-genie/cni-genie/pkg/datapath"
	"github.com/cni-genie/cni-genie/pkg/service"
	"github.com/cni-genie/cni-genie/pkg/store/etcdstore/etcdtest"
	"github.com/cni-genie/cni-genie/pkg/store/storetest"
)

var srv *etcdtest.Server

func TestMain(m *testing.M) { etcdtest.Main(m, &srv) }

type fakeDP struct {
	mu     sync.Mutex
	tables map[datapath.ServiceKey]datapath.ServiceTable
	writes int
}

func (f *fakeDP) UpsertService(k datapath.ServiceKey, t datapath.ServiceTable) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.tables[k] = t
	f.writes++
	return nil
}

func (f *fakeDP) DeleteService(k datapath.ServiceKey) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.tables, k)
	return nil
}

func (f *fakeDP) Services() ([]datapath.ServiceEntry, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []datapath.ServiceEntry
	for k := range f.tables {
		out = append(out, datapath.ServiceEntry{Key: k})
	}
	return out, nil
}

// backendsOf returns the distinct backend IPs of k's table ("" if absent).
func (f *fakeDP) backendsOf(k datapath.ServiceKey) (map[netip.Addr]bool, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	t, ok := f.tables[k]
	out := map[netip.Addr]bool{}
	for _, s := range t.Slots {
		out[s.IP] = true
	}
	return out, ok
}

func eventually(t *testing.T, what string, f func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if f() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

func TestSyncerProgramsHostedVPCsOnly(t *testing.T) {
	s := srv.NewStore(t, "")
	vip := netip.MustParseAddr("10.0.200.10")
	for _, v := range []string{"blue", "red"} {
		storetest.MustVPC(t, s, v, "10.0.0.0/16")
		sv := service.Service{VPC: v, Name: "web", VIP: vip, TableSize: 13,
			Ports: []service.Port{{Port: 80, Protocol: service.TCP, TargetPort: 8080}, {Port: 53, Protocol: service.UDP}}}
		if _, err := s.CreateService(t.Context(), sv); err != nil {
			t.Fatal(err)
		}
		b := service.Backends{VPC: v, Service: "web", Backends: []service.Backend{{IP: netip.MustParseAddr("10.0.0.2")}, {IP: netip.MustParseAddr("10.0.0.3")}}}
		if err := s.PutServiceBackends(t.Context(), b); err != nil {
			t.Fatal(err)
		}
	}
	// A frontend left in the pinned maps by a previous agent.
	stale := datapath.ServiceKey{VNI: 9, VIP: vip, Port: 1, Proto: datapath.TCP}
	dp := &fakeDP{tables: map[datapath.ServiceKey]datapath.ServiceTable{stale: {}}}
	var mu sync.Mutex
	hosted := map[string]uint32{"blue": 100}
	sy := &Syncer{Store: s, DP: dp, Poll: 20 * time.Millisecond}
	sy.Hosted = func() map[string]uint32 {
		mu.Lock()
		defer mu.Unlock()
		out := map[string]uint32{}
		for k, v := range hosted {
			out[k] = v
		}
		return out
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	go func() { _ = sy.Run(ctx) }()

	blueTCP := datapath.ServiceKey{VNI: 100, VIP: vip, Port: 80, Proto: datapath.TCP}
	blueUDP := datapath.ServiceKey{VNI: 100, VIP: vip, Port: 53, Proto: datapath.UDP}
	redTCP := datapath.ServiceKey{VNI: 200, VIP: vip, Port: 80, Proto: datapath.TCP}
	eventually(t, "blue's frontends", func() bool {
		b, ok1 := dp.backendsOf(blueTCP)
		_, ok2 := dp.backendsOf(blueUDP)
		_, ok3 := dp.backendsOf(stale)
		return ok1 && ok2 && !ok3 && len(b) == 2
	})
	dp.mu.Lock()
	if p := dp.tables[blueTCP].Slots[0].Port; p != 8080 || len(dp.tables[blueTCP].Slots) != 13 {
		t.Errorf("blue tcp table: %d slots, port %d; want 13 slots to 8080", len(dp.tables[blueTCP].Slots), p)
	}
	dp.mu.Unlock()
	if _, ok := dp.backendsOf(redTCP); ok {
		t.Fatal("red programmed although not hosted")
	}
	mu.Lock()
	hosted["red"] = 200
	mu.Unlock()
	eventually(t, "red's frontend once hosted", func() bool { _, ok := dp.backendsOf(redTCP); return ok })

	// A backend change rewrites the table; an unchanged poll does not.
	dp.mu.Lock()
	writes := dp.writes
	dp.mu.Unlock()
	time.Sleep(100 * time.Millisecond)
	dp.mu.Lock()
	if dp.writes != writes {
		t.Errorf("%d table writes without a change", dp.writes-writes)
	}
	dp.mu.Unlock()
	if err := s.PutServiceBackends(t.Context(), service.Backends{VPC: "blue", Service: "web", Backends: []service.Backend{{IP: netip.MustParseAddr("10.0.0.3")}}}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "blue's table without 10.0.0.2", func() bool {
		b, _ := dp.backendsOf(blueTCP)
		return len(b) == 1 && b[netip.MustParseAddr("10.0.0.3")]
	})
	if err := s.DeleteService(t.Context(), "blue", "web"); err != nil {
		t.Fatal(err)
	}
	eventually(t, "blue's frontends removed", func() bool {
		_, ok1 := dp.backendsOf(blueTCP)
		_, ok2 := dp.backendsOf(blueUDP)
		return !ok1 && !ok2
	})
}
