package storetest

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/cni-genie/cni-genie/pkg/egress"
	"github.com/cni-genie/cni-genie/pkg/store"
	"github.com/cni-genie/cni-genie/pkg/vpc"
)

// RunEgress runs the conformance tests of store.EgressStore against b,
// whose stores must implement it.
func RunEgress(t *testing.T, b Backend) {
	for _, tc := range []struct {
		name string
		f    func(*testing.T, func() store.Store)
	}{
		{"EgressLifecycle", testEgressLifecycle},
		{"EgressInvalid", testEgressInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.f(t, b(t))
		})
	}
}

func egressStore(t *testing.T, s store.Store) store.EgressStore {
	t.Helper()
	es, ok := s.(store.EgressStore)
	if !ok {
		t.Fatalf("%T does not implement store.EgressStore", s)
	}
	return es
}

func mustNode(t *testing.T, s store.Store, name, ip string, labels map[string]string) {
	t.Helper()
	if err := s.RegisterNode(t.Context(), vpc.Node{Name: name, UnderlayIP: netip.MustParseAddr(ip), Labels: labels}); err != nil {
		t.Fatal(err)
	}
}

func outGateway(v string, nodes ...string) egress.Gateway {
	return egress.Gateway{VPC: v, Name: "out", Destinations: []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")}, Nodes: nodes}
}

func testEgressLifecycle(t *testing.T, open func() store.Store) {
	ctx := t.Context()
	s := open()
	es := egressStore(t, s)
	MustVPC(t, s, "blue", "10.0.0.0/16")
	MustVPC(t, s, "red", "10.0.0.0/16")
	mustNode(t, s, "gw-a", "192.168.0.1", map[string]string{"egress": "yes"})
	mustNode(t, s, "gw-b", "192.168.0.2", nil)

	_, rev, err := es.ListEgressGateways(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	watch := es.WatchEgressGateways(ctx, rev)

	g := outGateway("blue", "gw-b")
	g.Selector = map[string]string{"app": "web"}
	g.NodeSelector = map[string]string{"egress": "yes"}
	g.EgressIPs = map[string]netip.Addr{"gw-b": netip.MustParseAddr("192.168.0.200")}
	got, err := es.CreateEgressGateway(ctx, g)
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	if _, err := es.CreateEgressGateway(ctx, g); !errors.Is(err, store.ErrExists) {
		t.Fatalf("create twice: %v, want ErrExists", err)
	}
	// Same name in another VPC: another object.
	if _, err := es.CreateEgressGateway(ctx, outGateway("red", "gw-a")); err != nil {
		t.Fatalf("create red/out: %v", err)
	}
	back, err := es.GetEgressGateway(ctx, "blue", "out")
	if err != nil || back.EgressIPs["gw-b"] != g.EgressIPs["gw-b"] || back.Selector["app"] != "web" || back.NodeSelector["egress"] != "yes" {
		t.Fatalf("get: %+v, %v; want %+v", back, err, got)
	}
	all, _, err := es.ListEgressGateways(ctx, "")
	if err != nil || len(all) != 2 || all[0].Key() != "blue/out" || all[1].Key() != "red/out" {
		t.Fatalf("list: %+v, %v", all, err)
	}
	if blue, _, err := es.ListEgressGateways(ctx, "blue"); err != nil || len(blue) != 1 {
		t.Fatalf("list blue: %+v, %v", blue, err)
	}

	// A drain is an update.
	d, _ := back.WithDrain("gw-b", time.Now())
	if _, err := es.UpdateEgressGateway(ctx, d); err != nil {
		t.Fatalf("update: %v", err)
	}
	if back, err = es.GetEgressGateway(ctx, "blue", "out"); err != nil || len(back.Drains) != 1 || back.Drains[0].Node != "gw-b" {
		t.Fatalf("drain not stored: %+v, %v", back, err)
	}
	missing := outGateway("blue", "gw-a")
	missing.Name = "nope"
	if _, err := es.UpdateEgressGateway(ctx, missing); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("update of a missing gateway: %v, want ErrNotFound", err)
	}

	if err := es.DeleteEgressGateway(ctx, "blue", "out"); err != nil {
		t.Fatal(err)
	}
	if err := es.DeleteEgressGateway(ctx, "blue", "out"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("delete twice: %v, want ErrNotFound", err)
	}
	if _, err := es.GetEgressGateway(ctx, "blue", "out"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("get deleted: %v", err)
	}

	// The watch saw: put blue, put red, put blue (drain), delete blue.
	want := []string{"put blue/out", "put red/out", "put blue/out", "delete blue/out"}
	for i, w := range want {
		select {
		case ev := <-watch:
			if got := ev.Type.String() + " " + ev.Gateway.Key(); got != w {
				t.Fatalf("event %d: %s (%v), want %s", i, got, ev.Err, w)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("event %d (%s) not seen", i, w)
		}
	}
}

func testEgressInvalid(t *testing.T, open func() store.Store) {
	ctx := t.Context()
	s := open()
	es := egressStore(t, s)
	MustVPC(t, s, "blue", "10.1.0.0/16")
	mustNode(t, s, "gw-a", "192.168.0.1", nil)
	if _, err := es.CreateEgressGateway(ctx, outGateway("blue", "gw-a")); err != nil {
		t.Fatal(err)
	}
	pfx := netip.MustParsePrefix
	for _, tc := range []struct {
		name string
		g    egress.Gateway
		is   error
		says string
	}{
		{"unknown vpc", outGateway("green", "gw-a"), store.ErrNotFound, `"green"`},
		{"unknown node", func() egress.Gateway { g := outGateway("blue", "gw-zz"); g.Name = "x"; return g }(), store.ErrNotFound, `"gw-zz"`},
		{"destination inside the vpc", func() egress.Gateway {
			g := outGateway("blue", "gw-a")
			g.Name, g.Destinations = "x", []netip.Prefix{pfx("10.1.2.0/24")}
			return g
		}(), vpc.ErrInvalid, "overlaps vpc"},
		{"the vpc's own cidr", func() egress.Gateway {
			g := outGateway("blue", "gw-a")
			g.Name, g.Destinations = "x", []netip.Prefix{pfx("10.1.0.0/16")}
			return g
		}(), vpc.ErrInvalid, "10.1.0.0/16"},
		{"no destination", func() egress.Gateway { g := outGateway("blue", "gw-a"); g.Name, g.Destinations = "x", nil; return g }(), vpc.ErrInvalid, "no destinations"},
		{"no gateway node", func() egress.Gateway { g := outGateway("blue"); g.Name = "x"; return g }(), vpc.ErrInvalid, "no gateway nodes"},
		{"two egress addresses for one node in one vpc", func() egress.Gateway {
			g := outGateway("blue", "gw-a")
			g.Name, g.Destinations = "x", []netip.Prefix{pfx("198.51.100.0/24")}
			g.EgressIPs = map[string]netip.Addr{"gw-a": netip.MustParseAddr("192.168.0.77")}
			return g
		}(), store.ErrConflict, `"blue/out"`},
		{"bad egress address", func() egress.Gateway {
			g := outGateway("blue", "gw-a")
			g.Name, g.EgressIPs = "x", map[string]netip.Addr{"gw-a": netip.MustParseAddr("127.0.0.1")}
			return g
		}(), vpc.ErrInvalid, "127.0.0.1"},
	} {
		_, err := es.CreateEgressGateway(ctx, tc.g)
		if !errors.Is(err, tc.is) || !strings.Contains(err.Error(), tc.says) {
			t.Errorf("%s: %v, want %v naming %s", tc.name, err, tc.is, tc.says)
		}
	}
	// A destination containing the vpc (0/0-style) is fine, as are two
	// gateways sharing a node with the same (default) address.
	g := outGateway("blue", "gw-a")
	g.Name, g.Destinations = "wide", []netip.Prefix{pfx("10.0.0.0/8")}
	if _, err := es.CreateEgressGateway(ctx, g); err != nil {
		t.Errorf("destination containing the vpc: %v", err)
	}
}

// RunHeartbeats runs the conformance test of store.BeatStore against s
// (with the rights of a node agent).
func RunHeartbeats(t *testing.T, s store.Store) {
	ctx := t.Context()
	bs, ok := s.(store.BeatStore)
	if !ok {
		t.Fatalf("%T does not implement store.BeatStore", s)
	}
	_, rev, err := bs.ListBeats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	w := bs.WatchBeats(ctx, rev)
	for range 2 {
		if err := bs.Beat(ctx, "gw-a"); err != nil {
			t.Fatal(err)
		}
	}
	beats, _, err := bs.ListBeats(ctx)
	if err != nil || len(beats) != 1 || beats[0].Node != "gw-a" || time.Since(beats[0].Time) > time.Minute {
		t.Fatalf("beats listed: %v, %v; want gw-a just now", beats, err)
	}
	if err := bs.DeleteBeat(ctx, "gw-a"); err != nil {
		t.Fatal(err)
	}
	for i, want := range []string{"put gw-a", "put gw-a", "delete gw-a"} {
		select {
		case ev := <-w:
			if got := ev.Type.String() + " " + ev.Node; got != want {
				t.Fatalf("beat event %d: %s (%v), want %s", i, got, ev.Err, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("beat event %d (%s) not seen", i, want)
		}
	}
}
