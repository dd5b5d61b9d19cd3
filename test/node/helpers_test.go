package node

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"time"

	"github.com/cni-genie/cni-genie/pkg/agentapi"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/cni-genie/cni-genie/pkg/testutil/testenv"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

type (
	netIPNet = net.IPNet
	netIP    = net.IP
)

func (e *env) pod(name string) *corev1.Pod {
	e.t.Helper()
	p, err := e.cs.CoreV1().Pods(e.ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	return p
}

// netConfDir returns the node's /etc/cni/net.d, name → content.
func (e *env) netConfDir() map[string]string {
	dir := e.n.NodePath("/etc/cni/net.d")
	ents, _ := os.ReadDir(dir)
	out := map[string]string{}
	for _, d := range ents {
		b, _ := os.ReadFile(filepath.Join(dir, d.Name()))
		out[d.Name()] = string(b)
	}
	return out
}

// checkPodNoGenie asserts a pod got the cluster network straight from the
// bridge plugin: one interface, no network-status written by genie.
func (e *env) checkPodNoGenie(p *corev1.Pod) {
	e.t.Helper()
	got := e.ifaces(p)
	if len(got) != 1 || len(got["eth0"]) != 1 || !clusterNet.Contains(got["eth0"][0]) {
		e.t.Errorf("pod %s after uninstall has %v, want eth0 in %s only", p.Name, got, clusterNet)
	}
	if s, ok := e.pod(p.Name).Annotations[nadv1.NetworkStatusAnnot]; ok {
		e.t.Errorf("pod %s after uninstall has a network-status from genie: %s", p.Name, s)
	}
}

// agentPID finds genied among the node's processes.
func (e *env) agentPID() int {
	if pids := e.n.Processes("/usr/local/bin/genied"); len(pids) == 1 {
		return pids[0]
	}
	return 0
}

func rssMiB(pid int) int {
	b, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.Atoi(f[1])
			return kb / 1024
		}
	}
	return -1
}

// startPing runs up to count pings at interval from the pod to ip in the
// background; stop ends them (SIGINT, as a user would) and returns how many
// were sent up to the last one answered, and how many of those were
// answered (a missing sequence number before the last reply is a loss).
func (e *env) startPing(from *corev1.Pod, ip net.IP, count int, interval time.Duration) (stop func() (sent, got int, err error), err error) {
	pns, err := e.n.PodNetNS(from)
	if err != nil {
		return nil, err
	}
	path := pns.Path()
	pns.Close()
	cmd := exec.Command("nsenter", "--net="+path, filepath.Join(testenv.BinDir(e.t), "busybox"), "ping", "-c", strconv.Itoa(count),
		"-i", fmt.Sprintf("%.1f", interval.Seconds()), "-W", "1", ip.String())
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	return func() (int, int, error) {
		time.Sleep(time.Second)
		cmd.Process.Signal(syscall.SIGINT)
		cmd.Wait() // non-zero when a reply is missing: the counts say
		// Count by sequence number, up to the last reply: the request
		// in flight when SIGINT arrives is not a loss, a gap is.
		seen := map[int]bool{}
		last := -1
		for _, l := range strings.Split(out.String(), "\n") {
			i := strings.Index(l, "seq=")
			if i < 0 {
				continue
			}
			var seq int
			if n, _ := fmt.Sscanf(l[i:], "seq=%d", &seq); n == 1 {
				seen[seq] = true
				last = max(last, seq)
			}
		}
		if last < 0 {
			return 0, 0, fmt.Errorf("ping output: %s", out.String())
		}
		return last + 1, len(seen), nil
	}, nil
}

// genieds returns the UIDs of the running cni-genie DaemonSet pods.
func (e *env) genieds() []string {
	e.t.Helper()
	pods, err := e.cs.CoreV1().Pods("kube-system").List(context.Background(), metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=cni-genie"})
	if err != nil {
		e.t.Fatal(err)
	}
	var uids []string
	for _, p := range pods.Items {
		if p.DeletionTimestamp == nil {
			uids = append(uids, string(p.UID))
		}
	}
	return uids
}

// traceSpoofed runs geniectl trace in the agent's pod, as docs/trace.md
// says (kubectl exec), and checks that a packet pod sends from ifname with
// a forged source address shows up with its reason, pod and VPC.
func (e *env) traceSpoofed(pod *corev1.Pod, ifname string, peer *corev1.Pod) {
	t := e.t
	var peerIP net.IP
	for _, s := range e.networkStatus(peer.Name) {
		if strings.HasPrefix(s.Name, e.ns+"/nad-blue") {
			peerIP = net.ParseIP(s.IPs[0])
		}
	}
	cmd := e.n.KubectlCommand("-n", "kube-system", "exec", "ds/cni-genie", "-c", "genied", "--",
		"geniectl", "trace", "--pod", e.ns+"/"+pod.Name, "--reason", "SPOOFED_IP", "--count", "1", "-o", "json")
	stdout, _ := cmd.StdoutPipe()
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	started := make(chan string, 1)
	var errOut strings.Builder
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			errOut.WriteString(sc.Text() + "\n")
			if strings.HasPrefix(sc.Text(), "tracing drops") {
				started <- sc.Text()
			}
		}
		close(started)
	}()
	if _, ok := <-started; !ok {
		cmd.Wait()
		t.Fatalf("geniectl trace in the agent's pod did not start:\n%s", errOut.String())
	}
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	// A second address on the pod's VPC interface, and a datagram from
	// it: not the pod's own address, dropped as SPOOFED_IP.
	spoof := net.ParseIP("10.10.1.250")
	pns, err := e.nodeOf(pod).PodNetNS(pod)
	if err != nil {
		t.Fatal(err)
	}
	defer pns.Close()
	send := func() error {
		return pns.Do(func(ns.NetNS) error {
			l, err := netlink.LinkByName(ifname)
			if err != nil {
				return err
			}
			addr := &netlink.Addr{IPNet: &net.IPNet{IP: spoof, Mask: net.CIDRMask(32, 32)}}
			if err := netlink.AddrReplace(l, addr); err != nil {
				return err
			}
			c, err := net.DialUDP("udp4", &net.UDPAddr{IP: spoof}, &net.UDPAddr{IP: peerIP, Port: 9})
			if err != nil {
				return err
			}
			c.Write([]byte("forged"))
			return c.Close()
		})
	}
	var line string
	deadline := time.After(20 * time.Second)
wait:
	for {
		if err := send(); err != nil {
			t.Fatal(err)
		}
		select {
		case l, ok := <-lines:
			if !ok {
				cmd.Wait()
				t.Fatalf("geniectl trace ended without an event:\n%s", errOut.String())
			}
			line = l
			break wait
		case <-deadline:
			t.Fatalf("no SPOOFED_IP drop of %s traced:\n%s", pod.Name, errOut.String())
		case <-time.After(300 * time.Millisecond):
		}
	}
	pns.Do(func(ns.NetNS) error {
		if l, err := netlink.LinkByName(ifname); err == nil {
			netlink.AddrDel(l, &netlink.Addr{IPNet: &net.IPNet{IP: spoof, Mask: net.CIDRMask(32, 32)}})
		}
		return nil
	})
	t.Logf("geniectl trace (kubectl exec): %s", line)
	var ev agentapi.TraceEvent
	if err := json.Unmarshal([]byte(line), &ev); err != nil {
		t.Fatalf("trace output %q: %v", line, err)
	}
	if ev.Reason != "SPOOFED_IP" || ev.Node != e.nodeOf(pod).Name || ev.VPC != "blue" || ev.Pod == nil ||
		ev.Pod.Namespace != e.ns || ev.Pod.Name != pod.Name || ev.Pod.Interface != ifname || ev.Src != spoof.String() {
		t.Errorf("forged packet of %s/%s traced as %s", e.ns, pod.Name, line)
	}
}
