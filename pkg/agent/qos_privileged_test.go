package agent_test

import (
	"context"
	"net/netip"
	"path/filepath"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cni-genie/cni-genie/pkg/agentapi"
	"github.com/cni-genie/cni-genie/pkg/qos"
	"github.com/cni-genie/cni-genie/pkg/vpc"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
	"github.com/vishvananda/netlink"
)

// podClasses lists the pod HTB classes (1:100-1:fff) on the node's uplink.
func podClasses(t *testing.T, n *node) map[uint16]bool {
	t.Helper()
	out := map[uint16]bool{}
	err := n.ns.Do(func(ns.NetNS) error {
		link, err := netlink.LinkByName("eth0")
		if err != nil {
			return err
		}
		cs, err := netlink.ClassList(link, qos.Handle(0))
		if err != nil {
			return err
		}
		for _, c := range cs {
			if m := uint16(c.Attrs().Handle); c.Attrs().Handle>>16 == qos.Major && m >= 0x100 {
				out[m] = true
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// buckets counts the entries of the node's pinned ingress limit map.
func buckets(t *testing.T, n *node) int {
	t.Helper()
	m, err := ebpf.LoadPinnedMap(filepath.Join(n.pinDir, "genie_qos_ingress"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	count := 0
	var k uint32
	v := make([]byte, m.ValueSize())
	it := m.Iterate()
	for it.Next(&k, &v) {
		count++
	}
	if err := it.Err(); err != nil {
		t.Fatal(err)
	}
	return count
}

// TestPrivilegedQoSRestart: an attachment's egress limit is an HTB class
// and its ingress limit a data plane bucket; after the agent restarts
// without the pod's DEL (the pod vanished meanwhile) both are gone, and so
// is a pod class no attachment records (a crash between creating the class
// and saving the record); the class of a pod that lives on stays.
func TestPrivilegedQoSRestart(t *testing.T) {
	c := newCluster(t, 1, "--qos-uplink-rate", "1G")
	e := c.nodes[0]
	ctx := context.Background()
	if _, err := c.st.CreateVPC(ctx, vpc.VPC{Name: "blue", CIDR: netip.MustParsePrefix("10.1.0.0/16")}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.st.CreateSubnet(ctx, vpc.Subnet{VPC: "blue", Name: "web", CIDR: netip.MustParsePrefix("10.1.0.0/24")}); err != nil {
		t.Fatal(err)
	}
	attach := func(name string, pns ns.NetNS) {
		_, err := e.client.Attach(ctx, &agentapi.AttachRequest{
			ContainerID: "ctr-" + name, IfName: "eth1", Netns: pns.Path(), PodNamespace: "default", PodName: name,
			VPC: "blue", Subnet: "web", QoS: &qos.Spec{Class: qos.Low, EgressRate: 10_000_000, IngressRate: 20_000_000},
		})
		if err != nil {
			t.Fatalf("attach %s: %v\n%s", name, err, e.logs())
		}
	}
	keep := e.newPodNS()
	attach("keep", keep)
	gone, err := testutils.NewNS()
	if err != nil {
		t.Fatal(err)
	}
	attach("gone", gone)
	if got := podClasses(t, e); len(got) != 2 || !got[0x100] || !got[0x101] {
		t.Fatalf("pod classes %v, want 1:100 and 1:101", got)
	}
	if m := e.metrics(t); m[`genie_qos_limited_endpoints{direction="ingress"}`] != 2 || m[`genie_qos_endpoints{class="low"}`] != 2 {
		t.Fatalf("metrics: ingress-limited %v, low %v", m[`genie_qos_limited_endpoints{direction="ingress"}`], m[`genie_qos_endpoints{class="low"}`])
	}

	if n := buckets(t, e); n != 2 {
		t.Fatalf("%d ingress buckets in the data plane, want 2", n)
	}

	e.stopAgent()
	// The pod vanishes without a DEL, and a class leaks.
	gone.Close()
	if err := testutils.UnmountNS(gone); err != nil {
		t.Fatal(err)
	}
	err = e.ns.Do(func(ns.NetNS) error {
		link, err := netlink.LinkByName("eth0")
		if err != nil {
			return err
		}
		return netlink.ClassAdd(netlink.NewHtbClass(netlink.ClassAttrs{LinkIndex: link.Attrs().Index, Handle: qos.Handle(0x1ff), Parent: qos.Handle(1)},
			netlink.HtbClassAttrs{Rate: 1e6, Ceil: 1e6, Buffer: 1 << 17, Cbuffer: 1 << 17}))
	})
	if err != nil {
		t.Fatal(err)
	}
	e.startAgent(t)

	if got := podClasses(t, e); len(got) != 1 || !got[0x100] {
		t.Errorf("pod classes after restart %v, want only 1:100 (the live pod's)", got)
	}
	if m := e.metrics(t); m[`genie_qos_limited_endpoints{direction="ingress"}`] != 1 || m[`genie_qos_limited_endpoints{direction="egress"}`] != 1 {
		t.Errorf("after restart: ingress-limited %v, egress-limited %v; want 1 and 1",
			m[`genie_qos_limited_endpoints{direction="ingress"}`], m[`genie_qos_limited_endpoints{direction="egress"}`])
	}
	if n := buckets(t, e); n != 1 {
		t.Errorf("%d ingress buckets in the data plane after restart, want 1", n)
	}
	eps, _, err := c.st.ListEndpoints(ctx, "blue")
	if err != nil || len(eps) != 1 || eps[0].QoS == nil || *eps[0].QoS != (vpc.EndpointQoS{Class: "low", EgressRate: 10_000_000, IngressRate: 20_000_000}) {
		t.Errorf("store endpoints after restart: %+v, %v", eps, err)
	}
}
