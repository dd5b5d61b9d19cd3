package datapath

import (
	"bytes"
	"encoding/binary"
	"net"
	"net/netip"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// The overlay as a pod's default network (LocalEndpoint.NodeNet,
// LXC_F_NODE_NET): on the egress world, red 10.0.0.2 is its pod's default
// network; red 10.0.0.1 is not. Node A is nobody's gateway here (its
// gateway entries and egress addresses are removed), so the replies to its
// own address are recognised without a genie_egress_ips entry.
//
//	red 0.0.0.0/0        -> policy 1 (gateway B) for every pod: the policy wins
//	red 198.51.100.0/24  -> selects red 10.0.0.1 only: red 10.0.0.2 (policy 0)
//	                        leaves through its own node, SNATed to A
//	red 198.51.96.0/20   -> policy 0; the node has a blackhole route for
//	                        198.51.101.0/24 and none for 198.51.103.0/24
//	red 10.96.0.0/12     -> host (the Service CIDR): the host stack, unNATed
//	198.51.100.200       is an address of node A itself: the host stack
//	blue                 has no 0.0.0.0/0 route: nothing leaves, NodeNet or not
func newNodeNetWorld(t testing.TB) *Datapath {
	t.Helper()
	d := newEgressWorld(t)
	for _, vni := range []uint32{vniRed, vniBlue} {
		if err := d.DeleteEgressGateway(vni); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.PruneEgressIPs(); err != nil {
		t.Fatal(err)
	}
	// As the agent routes a default network's VPC: 0.0.0.0/0 and the
	// like with policy 0 where no policy selects the pod.
	for _, r := range []VPCRoute{
		{VNI: vniRed, Prefix: netip.MustParsePrefix("198.51.96.0/20"), Kind: RouteEgress},
		{VNI: vniRed, Prefix: netip.MustParsePrefix("10.96.0.0/12"), Kind: RouteHost},
	} {
		if err := d.UpsertVPCRoute(r); err != nil {
			t.Fatal(err)
		}
	}
	for _, ep := range []LocalEndpoint{redB, blueA} {
		ep.NodeNet = true
		if err := d.UpsertLocalEndpoint(ep); err != nil {
			t.Fatal(err)
		}
	}
	inNS(t, worldNS, func() error {
		l, err := netlink.LinkByIndex(d.cfg.UplinkIfindex)
		if err != nil {
			return err
		}
		if err := netlink.AddrAdd(l, &netlink.Addr{IPNet: &net.IPNet{IP: nodeLocal.AsSlice(), Mask: net.CIDRMask(32, 32)}}); err != nil {
			return err
		}
		return netlink.RouteAdd(&netlink.Route{Dst: prefixNet("198.51.101.0/24"), Type: unix.RTN_BLACKHOLE})
	})
	return d
}

var nodeLocal = netip.MustParseAddr("198.51.100.200")

func TestPrivilegedEgressNodeNetFixtures(t *testing.T) {
	d := newNodeNetWorld(t)
	if ips, err := d.EgressGateways(); err != nil || len(ips) != 0 {
		t.Fatalf("gateway entries %v (%v), want none", ips, err)
	}
	data := payload(37) // odd: the checksum's last byte is padded
	toNode := tcpIP(ip2, 40000, nodeA, 10250, tcpSYN, nil)
	runFixtures(t, d, []fixture{
		{
			name: "to its node's underlay address: handed to the host stack unchanged", ifindex: redB.HostIfindex,
			in: frame(gwMAC, redB.MAC, toNode), verdict: tcActOK,
		},
		{
			name: "to another address of its node (fib: local): the host stack", ifindex: redB.HostIfindex,
			in: frame(gwMAC, redB.MAC, udpIP(ip2, 40000, nodeLocal, 53, payload(12))), verdict: tcActOK,
		},
		{
			name: "to a clusterip (host route): the host stack unNATed, for kube-proxy", ifindex: redB.HostIfindex,
			in: frame(gwMAC, redB.MAC, udpIP(ip2, 40000, netip.MustParseAddr("10.96.0.10"), 53, payload(12))), verdict: tcActOK,
		},
		{
			name: "red 10.0.0.1 (no default network) to a clusterip: no route", ifindex: redA.HostIfindex,
			in: frame(gwMAC, redA.MAC, udpIP(ip1, 40000, netip.MustParseAddr("10.96.0.10"), 53, payload(12))), verdict: tcActShot, drop: DropNoRoute,
		},
		{
			name: "red 10.0.0.1 is no default network: the node's address is outside, policy 1's gateway b", ifindex: redA.HostIfindex,
			in: frame(gwMAC, redA.MAC, tcpIP(ip1, 40000, nodeA, 10250, tcpSYN, nil)), verdict: tcActRedirect,
			check: encapCheck(vniRed, nodeBMAC, nodeB, gwMAC, tcpIP(ip1, 40000, nodeA, 10250, tcpSYN, nil), 0),
		},
		{
			name: "a policy that selects it wins: 203.0.113.10 through gateway b", ifindex: redB.HostIfindex,
			in: frame(gwMAC, redB.MAC, tcpIP(ip2, 40000, extIP, 443, tcpSYN, nil)), verdict: tcActRedirect,
			check: encapCheck(vniRed, nodeBMAC, nodeB, gwMAC, tcpIP(ip2, 40000, extIP, 443, tcpSYN, nil), 0),
		},
		{
			name: "an unknown address inside red stays a no-route drop", ifindex: redB.HostIfindex,
			in: frame(gwMAC, redB.MAC, tcpIP(ip2, 40000, netip.MustParseAddr("10.0.0.77"), 80, tcpSYN, nil)), verdict: tcActShot, drop: DropNoRoute,
		},
		{
			name: "blue has no route out: no-route drop, default network or not", ifindex: blueA.HostIfindex,
			in: frame(gwMAC, blueA.MAC, tcpIP(ip1, 40000, extIP2, 80, tcpSYN, nil)), verdict: tcActShot, drop: DropNoRoute,
		},
		{
			name: "gre out through its node is unsupported", ifindex: redB.HostIfindex,
			in: frame(gwMAC, redB.MAC, ipv4Pkt(ip2, extIP2, 47, payload(24), ipOpts{})), verdict: tcActShot, drop: DropEgressUnsupported,
		},
		{
			name: "the node's route is a blackhole: counted drop", ifindex: redB.HostIfindex,
			in: frame(gwMAC, redB.MAC, tcpIP(ip2, 40000, netip.MustParseAddr("198.51.101.1"), 80, tcpSYN, nil)), verdict: tcActShot, drop: DropEgressNoRoute,
		},
		{
			name: "the node has no route (fib: not forwarded): the host stack answers as a router", ifindex: redB.HostIfindex,
			in: frame(gwMAC, redB.MAC, tcpIP(ip2, 40000, netip.MustParseAddr("198.51.103.1"), 80, tcpSYN, nil)), verdict: tcActOK,
		},
		{
			name: "red 10.0.0.1 is no default network: policy 0 is a counted drop", ifindex: redA.HostIfindex,
			in: frame(gwMAC, redA.MAC, tcpIP(ip1, 40000, netip.MustParseAddr("198.51.101.1"), 80, tcpSYN, nil)), verdict: tcActShot, drop: DropEgressNotSelected,
		},
	}, runLxc(d))

	// Red 10.0.0.2 to 198.51.100.7 (no policy selects it): SNATed to the
	// node's underlay address, out to the router; the reply comes back
	// into the pod. Every frame is built from scratch, checksums
	// computed here.
	tu := Tuple{VNI: vniRed, Src: ip2, Dst: extIP2, SPort: 40000, DPort: 80, Proto: TCP}
	var nat netip.AddrPort
	step := func(name string, prog func() (uint32, []byte), verdict uint32, check func(*testing.T, []byte)) {
		t.Helper()
		t.Run(name, func(t *testing.T) {
			var (
				ret uint32
				out []byte
			)
			delta := dropDelta(t, d, func() { ret, out = prog() })
			if ret != verdict {
				t.Fatalf("verdict %d, want %d (drops %v)", int32(ret), int32(verdict), delta)
			}
			if len(delta) != 0 {
				t.Errorf("drop counters changed: %v", delta)
			}
			check(t, out)
		})
	}
	fromPod := func(ep LocalEndpoint, ip []byte) func() (uint32, []byte) {
		return func() (uint32, []byte) { return runSKB(t, d.lxc.FromPod, frame(gwMAC, ep.MAC, ip), ep.HostIfindex) }
	}
	fromOut := func(ip []byte) func() (uint32, []byte) {
		return func() (uint32, []byte) { return runSKB(t, d.uplink.FromUplink, fromOutside(ip), uplinkIdx) }
	}
	step("syn to 198.51.100.7 leaves through its own node, snated to its address", fromPod(redB, tcpIP(ip2, 40000, extIP2, 80, tcpSYN, nil)), tcActRedirect,
		func(t *testing.T, out []byte) {
			nat = snatOf(t, d, tu)
			if nat.Addr() != nodeA || nat.Port() < EgressPortMin {
				t.Fatalf("snat to %s, want %s and a port >= %d", nat, nodeA, EgressPortMin)
			}
			checkEgressOut(tcpIP(nodeA, nat.Port(), extIP2, 80, tcpSYN, nil))(t, out)
		})
	step("data keeps the port (odd payload)", fromPod(redB, tcpIP(ip2, 40000, extIP2, 80, tcpACK|tcpPSH, data)), tcActRedirect,
		checkEgressOut(tcpIP(nodeA, nat.Port(), extIP2, 80, tcpACK|tcpPSH, data)))
	step("the reply to the node's address and that port goes into the pod", func() (uint32, []byte) {
		return fromOut(tcpIP(extIP2, 80, nodeA, nat.Port(), tcpSYN|tcpACK, data))()
	}, tcActRedirect, checkedOut(frame(redB.MAC, gwMAC, tcpIP(extIP2, 80, ip2, 40000, tcpSYN|tcpACK, data)), 14))
	step("the node's own connection (ephemeral port) passes to the stack", fromOut(tcpIP(extIP2, 80, nodeA, 45000, tcpACK, nil)), tcxNext,
		func(*testing.T, []byte) {})
	step("a reply to a port of the range nobody holds passes to the stack", fromOut(tcpIP(extIP2, 80, nodeA, 64999, tcpACK, nil)), tcxNext,
		func(*testing.T, []byte) {})

	// UDP and ICMP echo.
	step("udp leaves snated", fromPod(redB, udpIP(ip2, 5353, extIP2, 53, data)), tcActRedirect, func(t *testing.T, out []byte) {
		n := snatOf(t, d, Tuple{VNI: vniRed, Src: ip2, Dst: extIP2, SPort: 5353, DPort: 53, Proto: UDP})
		checkEgressOut(ipv4Pkt(nodeA, extIP2, protoUDP, udpSeg(nodeA, extIP2, n.Port(), 53, data), ipOpts{id: 0x4321}))(t, out)
	})
	var icmpNAT netip.AddrPort
	step("icmp echo leaves snated, its identifier as the port", fromPod(redB, icmpIP(ip2, extIP2, 8, 0x1234)), tcActRedirect,
		func(t *testing.T, out []byte) {
			icmpNAT = snatOf(t, d, Tuple{VNI: vniRed, Src: ip2, Dst: extIP2, SPort: 0x1234, Proto: Protocol(protoICMP)})
			if want := outFrame(icmpIP(nodeA, extIP2, 8, icmpNAT.Port())); string(out) != string(want) {
				t.Errorf("output frame differs\n got %x\nwant %x", out, want)
			}
			if csum16(out[14:34]) != 0 || csum16(out[34:]) != 0 {
				t.Errorf("ipv4 or icmp checksum does not verify")
			}
		})
	step("the echo reply comes back with the pod's identifier", func() (uint32, []byte) {
		return fromOut(icmpIP(extIP2, nodeA, 0, icmpNAT.Port()))()
	}, tcActRedirect, func(t *testing.T, out []byte) {
		if want := frame(redB.MAC, gwMAC, icmpIP(extIP2, ip2, 0, 0x1234)); string(out) != string(want) {
			t.Errorf("output frame differs\n got %x\nwant %x", out, want)
		}
		if csum16(out[14:34]) != 0 || csum16(out[34:]) != 0 {
			t.Errorf("ipv4 or icmp checksum does not verify")
		}
	})
}

// FuzzEgressNodeNet runs from_pod (sel < 0x80) or from_uplink on random
// and mutated frames in the default-network world. The oracle, beside
// FuzzEgress's isolation checks:
//   - only a default-network pod's frame is handed to the host stack
//     (TC_ACT_OK), untouched, and never for an address inside its VPC;
//   - only a default-network pod's frame leaves to the outside here (node A
//     is nobody's gateway), and from node A's address (no un-NATed leak);
//   - nothing from the uplink is sent out (node A is no gateway).
func FuzzEgressNodeNet(f *testing.F) {
	nodeNetB, nodeNetBlue := redB, blueA
	nodeNetB.NodeNet, nodeNetBlue.NodeNet = true, true
	senders := []LocalEndpoint{redA, nodeNetB, nodeNetBlue, {HostIfindex: 4242}}
	for _, s := range []lxcSeed{
		{1, frame(gwMAC, redB.MAC, tcpIP(ip2, 40000, nodeA, 10250, tcpSYN, nil))},
		{1, frame(gwMAC, redB.MAC, tcpIP(ip2, 40000, extIP2, 80, tcpSYN, nil))},
		{1, frame(gwMAC, redB.MAC, icmpIP(ip2, extIP2, 8, 0x1234))},
		{1, frame(gwMAC, redB.MAC, udpIP(ip2, 40000, netip.MustParseAddr("10.96.0.10"), 53, payload(12)))},
		{1, frame(gwMAC, redB.MAC, tcpIP(ip2, 40000, netip.MustParseAddr("198.51.103.1"), 80, tcpSYN, nil))},
		{0, frame(gwMAC, redA.MAC, tcpIP(ip1, 40000, nodeA, 10250, tcpSYN, nil))},
		{2, frame(gwMAC, blueA.MAC, tcpIP(ip1, 40000, extIP2, 80, tcpSYN, nil))},
		{0x80, fromOutside(tcpIP(extIP2, 80, nodeA, 62000, tcpSYN|tcpACK, nil))},
		{0x80, fromOutside(icmpIP(extIP2, nodeA, 0, 63000))},
	} {
		f.Add(s.sender, s.frame)
	}
	d := newNodeNetWorld(f)
	f.Fuzz(func(t *testing.T, sel uint8, pkt []byte) {
		if kernelRejects(pkt) {
			t.Skip("frame refused by BPF_PROG_RUN itself")
		}
		if sel >= 0x80 {
			ret, out := runSKB(t, d.uplink.FromUplink, pkt, uplinkIdx)
			switch ret {
			case tcxNext:
				if !bytes.Equal(out, pkt) {
					t.Fatalf("passed frame was modified")
				}
			case tcActShot:
			case tcActRedirect:
				if len(out) >= 6 && bytes.Equal(out[0:6], routerMAC) {
					t.Fatalf("node a, no gateway, sent a frame from the uplink out: %x", out)
				}
				checkEgressUplinkOutput(t, pkt, out)
			default:
				t.Fatalf("unexpected verdict %d", int32(ret))
			}
			return
		}
		sender := senders[int(sel)%len(senders)]
		ret, out := runSKB(t, d.lxc.FromPod, pkt, sender.HostIfindex)
		switch ret {
		case tcActShot:
			if !bytes.Equal(out, pkt) {
				t.Fatalf("dropped frame was modified")
			}
		case tcActOK:
			if !sender.NodeNet {
				t.Fatalf("the frame of %+v, no default network, went to the host stack", sender)
			}
			if !bytes.Equal(out, pkt) {
				t.Fatalf("frame to the host stack was modified")
			}
			if len(pkt) >= 34 && binary.BigEndian.Uint16(pkt[12:14]) == etherIPv4 && isPodAddr(addr4(pkt[30:34])) {
				t.Fatalf("an address inside the vpc went to the host stack: %x", pkt[:34])
			}
		case tcActRedirect:
			if checkSentOut(t, out) {
				if !sender.NodeNet {
					t.Fatalf("vni %d sent out here for %s, no default network", sender.VNI, sender.IP)
				}
				return
			}
			if len(out) == len(pkt)+EncapOverhead && len(out) >= 84 && binary.BigEndian.Uint16(out[36:38]) == GenevePort {
				vni := uint32(out[46])<<16 | uint32(out[47])<<8 | uint32(out[48])
				if vni != sender.VNI || addr4(out[64+12:64+16]) != sender.IP {
					t.Fatalf("encapsulated with vni %d from %s for sender %d/%s", vni, addr4(out[64+12:64+16]), sender.VNI, sender.IP)
				}
				return
			}
			checkLxcOutput(t, sender, pkt, out)
		default:
			t.Fatalf("unexpected verdict %d", int32(ret))
		}
	})
}
