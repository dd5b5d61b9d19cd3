package node

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/cni-genie/cni-genie/pkg/image"
	"github.com/cni-genie/cni-genie/pkg/install"
	"github.com/cni-genie/cni-genie/pkg/testutil/kubenode"
	"github.com/cni-genie/cni-genie/pkg/testutil/testenv"
)

// TestPrivilegedInstallUnderKubelet installs genie with helm (the chart, as
// the README says) on a real node whose network is the bridge plugin, then:
//   - a pod without annotation gets the wrapped default network;
//   - a pod with the NPWG annotation gets bridge + macvlan NADs and a VPC;
//   - a pod with the classic cni annotation gets what it lists;
//   - two pods on the VPC reach each other;
//   - the service controller mirrors an annotated Service into the VPC
//     and the resolver writes its backend (service_test.go);
//   - deleting the pods leaves no lease, record, endpoint or veth;
//   - containerd and then kubelet restart: running pods keep their
//     network and a new pod works;
//   - helm upgrade with the same values changes nothing; to a new image
//     tag it replaces the agent while VPC traffic flows;
//   - uninstall (helm) removes genie's files only, and a pod made through
//     genie is deleted cleanly afterwards;
//   - the plain manifests (deploy/manifests) install, serve a VPC pod and
//     uninstall again.
func TestPrivilegedInstallUnderKubelet(t *testing.T) {
	e := setup(t)
	e.helmInstall()
	conf, err := os.ReadFile(e.n.NodePath("/etc/cni/net.d/" + install.ConfName))
	if err != nil || !strings.Contains(string(conf), `"defaultNetworks": [`+"\n"+`        "cluster"`) {
		t.Fatalf("genie's conflist does not wrap the cluster network: %v\n%s", err, conf)
	}
	if _, err := os.Stat(e.n.NodePath("/opt/cni/bin/genie")); err != nil {
		t.Fatalf("genie binary not installed: %v", err)
	}
	if fi, err := os.Stat(e.n.NodePath("/etc/cni/net.d/" + install.KubeconfigName)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("plugin kubeconfig: %v", err)
	}
	e.networks()

	t.Run("default", func(t *testing.T) {
		e := e.with(t)
		p, _ := e.runPod("plain", nil)
		e.checkPod(p, map[string]*netIPNet{"eth0": clusterNet}, map[string]string{"eth0": "cluster"})
	})
	npwg := map[string]string{"k8s.v1.cni.cncf.io/networks": "nad-bridge,nad-macvlan,nad-blue"}
	var multiIPs map[string]netIP
	t.Run("npwg", func(t *testing.T) {
		e := e.with(t)
		p, d := e.runPod("multi", npwg)
		t.Logf("default+bridge+macvlan+VPC pod Running in %v (timings: BenchmarkPodStartup)", d.Round(time.Millisecond))
		if pid := e.agentPID(); pid > 0 {
			t.Logf("genied RSS %d MiB", rssMiB(pid))
		}
		multiIPs = e.checkPod(p, map[string]*netIPNet{"eth0": clusterNet, "net1": bridgeNet, "net2": macvlanNet, "net3": vpcNet},
			map[string]string{"eth0": "cluster", "net1": e.ns + "/nad-bridge", "net2": e.ns + "/nad-macvlan", "net3": e.ns + "/nad-blue"})
	})
	t.Run("classic", func(t *testing.T) {
		e := e.with(t)
		p, _ := e.runPod("classic", map[string]string{"cni": "cluster,vpc:blue/web@eth1"})
		e.checkPod(p, map[string]*netIPNet{"eth0": clusterNet, "eth1": vpcNet}, map[string]string{"eth0": "cluster", "eth1": "vpc:blue/web"})
	})
	t.Run("vpc-reach", func(t *testing.T) {
		e := e.with(t)
		if multiIPs == nil {
			t.Skip("npwg pod failed")
		}
		peer, _ := e.runPod("peer", map[string]string{"k8s.v1.cni.cncf.io/networks": "nad-blue"})
		peerIPs := e.checkPod(peer, map[string]*netIPNet{"eth0": clusterNet, "net1": vpcNet}, map[string]string{"eth0": "cluster", "net1": e.ns + "/nad-blue"})
		multi := e.pod("multi")
		if err := e.ping(multi, peerIPs["net1"]); err != nil {
			t.Fatal(err)
		}
		if err := e.ping(peer, multiIPs["net3"]); err != nil {
			t.Fatal(err)
		}
		dot := e.geniectl("status", "--graph", "dot")
		for _, want := range []string{`"pod/genie-node/default/multi" -> "vpc/blue" [label="net3 blue/web ` + multiIPs["net3"].String(),
			`"pod/genie-node/default/peer" -> "vpc/blue"`, `"pod/genie-node/default/classic" -> "vpc/blue"`} {
			if !strings.Contains(dot, want) {
				t.Errorf("geniectl status --graph dot lacks %s:\n%s", want, dot)
			}
		}
	})
	t.Run("trace", func(t *testing.T) {
		e := e.with(t)
		if multiIPs == nil {
			t.Skip("npwg pod failed")
		}
		e.traceSpoofed(e.pod("multi"), "net3", e.pod("peer"))
	})
	t.Run("service-controller", func(t *testing.T) { e.with(t).serviceController() }) // service_test.go
	t.Run("plugin-credentials", func(t *testing.T) {
		e := e.with(t)
		// The plugin's kubeconfig, as genie reads it on the node.
		cfg, err := clientcmd.BuildConfigFromFlags("", e.n.NodePath("/etc/cni/net.d/"+install.KubeconfigName))
		if err != nil {
			t.Fatal(err)
		}
		cfg.Dial = e.n.DialContext
		pc, err := kubernetes.NewForConfig(cfg)
		if err != nil {
			t.Fatal(err)
		}
		ctx := t.Context()
		rev, err := pc.AuthenticationV1().SelfSubjectReviews().Create(ctx, &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if u := rev.Status.UserInfo; u.Username != "system:serviceaccount:kube-system:genie-cni" ||
			len(u.Extra["authentication.kubernetes.io/node-name"]) != 1 || u.Extra["authentication.kubernetes.io/node-name"][0] != e.n.Name {
			t.Fatalf("plugin authenticates as %+v, want genie-cni bound to node %s", u, e.n.Name)
		}
		patch := []byte(`{"metadata":{"annotations":{"genie-test":"x"}}}`)
		if _, err := pc.CoreV1().Pods(e.ns).Patch(ctx, "plain", types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
			t.Errorf("plugin cannot annotate a pod of its node: %v", err)
		}
		other := kubenode.BusyboxPod(e.ns, "elsewhere", "other-node", nil)
		if _, err := e.cs.CoreV1().Pods(e.ns).Create(ctx, other, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		defer e.cs.CoreV1().Pods(e.ns).Delete(context.Background(), "elsewhere", metav1.DeleteOptions{GracePeriodSeconds: new(int64)})
		if _, err := pc.CoreV1().Pods(e.ns).Patch(ctx, "elsewhere", types.MergePatchType, patch, metav1.PatchOptions{}); !apierrors.IsForbidden(err) && !apierrors.IsInvalid(err) {
			t.Errorf("plugin annotated a pod of another node: err=%v, want denied by genie-cni-node-scope", err)
		}
		if _, err := pc.CoreV1().Secrets("kube-system").List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
			t.Errorf("plugin can list secrets: %v", err)
		}
	})
	t.Run("reinstall-and-upgrade", func(t *testing.T) {
		e := e.with(t)
		if multiIPs == nil {
			t.Skip("npwg pod failed")
		}
		confPath := e.n.NodePath("/etc/cni/net.d/" + install.ConfName)
		binPath := e.n.NodePath("/opt/cni/bin/genie")
		conf0, _ := os.ReadFile(confPath)
		bin0, _ := os.Stat(binPath)
		// Install twice: the same chart and values change nothing, not
		// even the DaemonSet's pod.
		before := e.genieds()
		e.helm("upgrade", "cni-genie", e.chart(), "--namespace", "kube-system", "--reuse-values")
		if after := e.genieds(); fmt.Sprint(after) != fmt.Sprint(before) {
			t.Errorf("helm upgrade with the same values replaced the DaemonSet pod: %v → %v", before, after)
		}
		// Upgrade in place, to another image tag (the same bits, tagged
		// anew in containerd as a registry would serve them): a new
		// DaemonSet pod replaces the agent and the installer while a VPC
		// pod pings its peer through the data plane.
		if out, err := e.n.Ctr("images", "tag", image.GenieRef, image.GenieRef+"-upgrade"); err != nil {
			t.Fatalf("tag image: %v\n%s", err, out)
		}
		peer := e.pod("peer")
		var peerIP net.IP
		for _, s := range e.networkStatus("peer") {
			if s.Interface == "net1" {
				peerIP = net.ParseIP(s.IPs[0])
			}
		}
		oldPods := e.genieds()
		pinger, err := e.startPing(e.pod("multi"), peerIP, 600, 100*time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		tag := image.GenieRef[strings.LastIndex(image.GenieRef, ":")+1:] + "-upgrade"
		e.helm("upgrade", "cni-genie", e.chart(), "--namespace", "kube-system", "--reuse-values", "--set", "image.tag="+tag)
		if out, err := e.n.Kubectl("-n", "kube-system", "rollout", "status", "ds/cni-genie", "--timeout=120s"); err != nil {
			t.Fatalf("rollout status: %v\n%s", err, out)
		}
		sent, got, err := pinger()
		if err != nil {
			t.Fatal(err)
		}
		if newPods := e.genieds(); len(newPods) != 1 || newPods[0] == oldPods[0] {
			t.Fatalf("DaemonSet pod not replaced: %v → %v", oldPods, newPods)
		}
		t.Logf("VPC ping across the agent's replacement: %d/%d replies", got, sent)
		if sent == 0 || got != sent {
			t.Errorf("VPC traffic lost while the DaemonSet pod was replaced: %d of %d replies", got, sent)
		}
		if conf1, _ := os.ReadFile(confPath); string(conf1) != string(conf0) {
			t.Errorf("conflist changed by a reinstall:\n%s\n---\n%s", conf0, conf1)
		}
		if bin1, err := os.Stat(binPath); err != nil || !bin1.ModTime().Equal(bin0.ModTime()) {
			t.Errorf("identical genie binary rewritten by the reinstall")
		}
		if err := e.ping(peer, multiIPs["net3"]); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("delete-leaves-nothing", func(t *testing.T) {
		e := e.with(t)
		e.deletePods("plain", "classic", "peer")
		// Only the multi pod (kept for the restart phase) may hold
		// leases now: its three host-local ones.
		var leases []string
		e.eventually(30*time.Second, "leases of the deleted pods released", func() error {
			leases = testenv.HostLocalAllocations(e.n.NodePath("/var/lib/cni/networks"))
			if len(leases) != 3 {
				return fmt.Errorf("leases %v", leases)
			}
			return nil
		})
		for _, l := range leases {
			ip := net.ParseIP(filepath.Base(l))
			if multiIPs != nil && !ip.Equal(multiIPs["eth0"]) && !ip.Equal(multiIPs["net1"]) && !ip.Equal(multiIPs["net2"]) {
				t.Errorf("lease %s is not the multi pod's", l)
			}
		}
	})
	t.Run("restart-runtime", func(t *testing.T) {
		e := e.with(t)
		ctx := t.Context()
		peer, _ := e.runPod("peer2", map[string]string{"k8s.v1.cni.cncf.io/networks": "nad-blue"})
		peerIP := e.checkPod(peer, map[string]*netIPNet{"eth0": clusterNet, "net1": vpcNet}, map[string]string{"eth0": "cluster", "net1": e.ns + "/nad-blue"})["net1"]
		if err := e.n.RestartContainerd(ctx); err != nil {
			t.Fatal(err)
		}
		if err := e.n.RestartKubelet(ctx); err != nil {
			t.Fatal(err)
		}
		multi := e.pod("multi")
		if err := e.ping(multi, peerIP); err != nil {
			t.Fatalf("after containerd and kubelet restarts: %v", err)
		}
		after := e.checkPod(multi, map[string]*netIPNet{"eth0": clusterNet, "net1": bridgeNet, "net2": macvlanNet, "net3": vpcNet},
			map[string]string{"eth0": "cluster", "net1": e.ns + "/nad-bridge", "net2": e.ns + "/nad-macvlan", "net3": e.ns + "/nad-blue"})
		if multiIPs != nil && !after["net3"].Equal(multiIPs["net3"]) {
			t.Errorf("VPC address changed across restarts: %s → %s", multiIPs["net3"], after["net3"])
		}
		p, _ := e.runPod("fresh", npwg)
		e.checkPod(p, map[string]*netIPNet{"eth0": clusterNet, "net1": bridgeNet, "net2": macvlanNet, "net3": vpcNet}, nil)
		e.deletePods("fresh", "peer2", "multi")
		e.noLeftovers("deleting every pod")
	})
	t.Run("second-node", func(t *testing.T) {
		// Two kubelets, two containerd, one API server: the DaemonSet
		// comes up on the worker and VPC pods on the two nodes reach
		// each other through the overlay between them.
		e := e.with(t)
		w := kubenode.NewWorker(t, e.n, kubenode.Options{Name: "genie-node-2"})
		e.w = w
		// The upgrade above runs the image under its new tag.
		if out, err := w.Ctr("images", "tag", image.GenieRef, image.GenieRef+"-upgrade"); err != nil {
			t.Fatalf("tag image on %s: %v\n%s", w.Name, err, out)
		}
		e.waitDaemonSet("cni-genie", 2*time.Minute)
		e.eventually(time.Minute, "genie's conflist on "+w.Name, func() error {
			_, err := os.Stat(w.NodePath("/etc/cni/net.d/" + install.ConfName))
			return err
		})
		blue := map[string]string{"k8s.v1.cni.cncf.io/networks": "nad-blue"}
		a, _ := e.runPod("on-1", blue)
		b, _ := e.runPodOn(w, "on-2", blue)
		want := map[string]*netIPNet{"eth0": clusterNet, "net1": vpcNet}
		st := map[string]string{"eth0": "cluster", "net1": e.ns + "/nad-blue"}
		aIPs, bIPs := e.checkPod(a, want, st), e.checkPod(b, want, st)
		if err := e.ping(a, bIPs["net1"]); err != nil {
			t.Errorf("%s to %s across nodes: %v", a.Name, b.Name, err)
		}
		if err := e.ping(b, aIPs["net1"]); err != nil {
			t.Errorf("%s to %s across nodes: %v", b.Name, a.Name, err)
		}
		dot := e.geniectl("status", "--graph", "dot")
		for _, want := range []string{`"pod/genie-node/default/on-1" -> "vpc/blue"`, `"pod/genie-node-2/default/on-2" -> "vpc/blue"`} {
			if !strings.Contains(dot, want) {
				t.Errorf("geniectl status --graph dot lacks %s:\n%s", want, dot)
			}
		}
		e.deletePods("on-1", "on-2")
	})
	t.Run("uninstall", func(t *testing.T) {
		e := e.with(t)
		survivor, _ := e.runPod("survivor", map[string]string{"k8s.v1.cni.cncf.io/networks": "nad-bridge"})
		before := e.netConfDir()
		// docs/install.md: upgrade to uninstall=true, wait for the
		// cni-genie-uninstall DaemonSet, then helm uninstall.
		e.helm("upgrade", "cni-genie", e.chart(), "--namespace", "kube-system", "--reuse-values", "--set", "uninstall=true")
		e.waitDaemonSet("cni-genie-uninstall", 2*time.Minute)
		after := e.netConfDir()
		for f := range before {
			if _, ok := after[f]; !ok && f != install.ConfName && f != install.KubeconfigName {
				t.Errorf("uninstall removed %s, which is not genie's", f)
			}
		}
		for _, f := range []string{install.ConfName, install.KubeconfigName} {
			if _, ok := after[f]; ok {
				t.Errorf("uninstall left %s", f)
			}
		}
		if after["10-cluster.conflist"] != clusterConflist {
			t.Error("uninstall changed the cluster's conflist")
		}
		if _, err := os.Stat(e.n.NodePath("/opt/cni/bin/genie")); err == nil {
			t.Error("uninstall left the genie binary")
		}
		for _, b := range []string{"bridge", "host-local", "macvlan"} {
			if _, err := os.Stat(e.n.NodePath("/opt/cni/bin/" + b)); err != nil {
				t.Errorf("uninstall removed %s", b)
			}
		}
		e.helm("uninstall", "cni-genie", "--namespace", "kube-system", "--wait", "--timeout", "2m")
		if out, err := e.n.Kubectl("get", "-n", "kube-system", "ds,sa", "-l", "app.kubernetes.io/name=cni-genie", "-o", "name"); err != nil || len(strings.TrimSpace(string(out))) > 0 {
			t.Errorf("helm uninstall left %s (%v)", out, err)
		}
		// helm never deletes CRDs: the VPCs and NADs stay.
		if out, err := e.n.Kubectl("get", "vpcs.genie.cni.io", "blue"); err != nil {
			t.Errorf("VPC gone after helm uninstall: %v\n%s", err, out)
		}
		// A pod made through genie, deleted after uninstall: its DEL goes to
		// the cluster network and the pod goes away.
		e.deletePods("survivor")
		_ = survivor
		p, _ := e.runPod("after", nil)
		e.checkPodNoGenie(p)
		e.deletePods("after")
	})
	t.Run("manifests", func(t *testing.T) {
		// The plain manifests, on the node helm left (CRDs and networks
		// in place): install, a VPC pod, uninstall.
		e := e.with(t)
		e.install()
		p, _ := e.runPod("plain-vpc", map[string]string{"k8s.v1.cni.cncf.io/networks": "nad-blue"})
		e.checkPod(p, map[string]*netIPNet{"eth0": clusterNet, "net1": vpcNet}, map[string]string{"eth0": "cluster", "net1": e.ns + "/nad-blue"})
		e.deletePods("plain-vpc")
		up := filepath.Join(e.root, "deploy/manifests/cni-genie-uninstall.yaml")
		if out, err := e.n.Kubectl("apply", "-f", up); err != nil {
			t.Fatalf("apply uninstall: %v\n%s", err, out)
		}
		e.waitDaemonSet("cni-genie-uninstall", 2*time.Minute)
		for _, f := range []string{install.ConfName, install.KubeconfigName} {
			if _, ok := e.netConfDir()[f]; ok {
				t.Errorf("uninstall left %s", f)
			}
		}
		if out, err := e.n.Kubectl("delete", "--wait=true", "--timeout=120s", "-f", up, "-f", filepath.Join(e.root, "deploy/manifests/cni-genie.yaml")); err != nil {
			t.Fatalf("delete manifests: %v\n%s", err, out)
		}
	})
}
