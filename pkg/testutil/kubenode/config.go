package kubenode

import (
	"fmt"
	"net"
	"os"
	"strconv"
)

// writeConfig writes the PKI, the components' kubeconfigs, containerd's
// and kubelet's configuration.
func (n *Node) writeConfig() error {
	var err error
	if n.pki, err = newPKI(n.path("pki")); err != nil {
		return err
	}
	ips := []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP(NodeIP), net.ParseIP(ServiceIP)}
	if _, _, err := n.pki.issue("apiserver", "kube-apiserver", nil, ips,
		[]string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"}); err != nil {
		return err
	}
	if _, _, err := n.pki.issue("apiserver-kubelet-client", "kube-apiserver-kubelet-client", []string{"system:masters"}, nil, nil); err != nil {
		return err
	}
	server := n.apiURL()
	if n.AdminKubeconfig, err = n.pki.kubeconfig("admin-client", server, "genie-kubenode-admin", "system:masters"); err != nil {
		return err
	}
	if _, err = n.pki.kubeconfig("scheduler", server, "system:kube-scheduler"); err != nil {
		return err
	}
	if _, err = n.pki.kubeconfig("controller-manager", server, "system:kube-controller-manager"); err != nil {
		return err
	}
	return n.writeNodeConfig()
}

// kubeletPKI is the name of the node's kubelet certificates in the
// (control plane's) PKI dir: kubelet-serving.crt, kubelet.kubeconfig, or
// with "-<name>" appended on a worker.
func (n *Node) kubeletPKI(base string) string {
	if n.control == nil {
		return base
	}
	return base + "-" + n.Name
}

// writeNodeConfig writes what kubelet and containerd of this node need:
// the kubelet's certificates and kubeconfig, their configuration files.
func (n *Node) writeNodeConfig() error {
	if _, _, err := n.pki.issue(n.kubeletPKI("kubelet-serving"), n.Name, nil, []net.IP{net.ParseIP(n.IP)}, []string{n.Name}); err != nil {
		return err
	}
	if _, err := n.pki.kubeconfig(n.kubeletPKI("kubelet"), n.apiURL(), "system:node:"+n.Name, "system:nodes"); err != nil {
		return err
	}
	if err := os.MkdirAll(n.path("conf"), 0o755); err != nil {
		return err
	}
	containerd := fmt.Sprintf(`version = 3
root = %[1]q
state = %[2]q
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.erofs"]
[grpc]
  address = %[3]q
[plugins."io.containerd.cri.v1.images"]
  snapshotter = "overlayfs"
  [plugins."io.containerd.cri.v1.images".pinned_images]
    sandbox = %[4]q
[plugins."io.containerd.cri.v1.runtime"]
  # No CAP_SYS_RESOURCE on this kind of machine: runc cannot lower the
  # pause container's oom_score_adj.
  restrict_oom_score_adj = true
  [plugins."io.containerd.cri.v1.runtime".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]
        BinaryName = %[5]q
        SystemdCgroup = false
  [plugins."io.containerd.cri.v1.runtime".cni]
    bin_dirs = ["/opt/cni/bin"]
    conf_dir = "/etc/cni/net.d"
    max_conf_num = 1
`, n.path("containerd", "root"), n.path("containerd", "state"), n.containerdSocket(), n.opts.SandboxImage, n.bin("runc"))
	if err := os.WriteFile(n.path("conf", "containerd.toml"), []byte(containerd), 0o644); err != nil {
		return err
	}
	kubelet := fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: cgroupfs
cgroupRoot: /%[1]s
failSwapOn: false
failCgroupV1: false
containerRuntimeEndpoint: unix://%[2]s
address: %[3]s
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
tlsCertFile: %[4]s/%[6]s.crt
tlsPrivateKeyFile: %[4]s/%[6]s.key
authentication: {anonymous: {enabled: false}, webhook: {enabled: true}, x509: {clientCAFile: %[4]s/ca.crt}}
authorization: {mode: Webhook}
clusterDomain: cluster.local
clusterDNS: [10.0.0.10]
podLogsDir: %[5]s
evictionHard: {memory.available: "100Mi", nodefs.available: "1%%", imagefs.available: "1%%", nodefs.inodesFree: "1%%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
syncFrequency: 5s
nodeStatusUpdateFrequency: 4s
fileCheckFrequency: 5s
`, n.cgroupRoot, n.containerdSocket(), n.IP, n.pki.dir, n.path("pod-logs"), n.kubeletPKI("kubelet-serving"))
	return os.WriteFile(n.path("conf", "kubelet.yaml"), []byte(kubelet), 0o644)
}

// componentArgs are the flags of the control-plane components.
func (n *Node) componentArgs(name string) []string {
	p := n.path("pki")
	switch name {
	case "kube-apiserver":
		return []string{"--etcd-servers", "http://127.0.0.1:2379", "--bind-address", "0.0.0.0",
			"--advertise-address", NodeIP, "--secure-port", strconv.Itoa(APIServerPort), "--cert-dir", n.path("apiserver-certs"),
			"--tls-cert-file", p + "/apiserver.crt", "--tls-private-key-file", p + "/apiserver.key", "--client-ca-file", p + "/ca.crt",
			"--authorization-mode", "Node,RBAC", "--enable-admission-plugins", "NodeRestriction",
			"--service-account-issuer", "https://kubernetes.default.svc", "--service-account-key-file", n.pki.saKeyFile(),
			"--service-account-signing-key-file", n.pki.saKeyFile(), "--service-cluster-ip-range", ServiceCIDR,
			"--endpoint-reconciler-type", "none", "--allow-privileged=true", "--profiling=false",
			"--kubelet-client-certificate", p + "/apiserver-kubelet-client.crt", "--kubelet-client-key", p + "/apiserver-kubelet-client.key",
			"--kubelet-certificate-authority", p + "/ca.crt", "--kubelet-preferred-address-types", "InternalIP"}
	case "kube-controller-manager":
		kc := p + "/controller-manager.kubeconfig"
		return []string{"--kubeconfig", kc, "--authentication-kubeconfig", kc, "--authorization-kubeconfig", kc,
			"--leader-elect=false", "--bind-address", "127.0.0.1", "--secure-port", "10257",
			"--root-ca-file", n.pki.caFile(), "--service-account-private-key-file", n.pki.saKeyFile(),
			"--use-service-account-credentials=true", "--controllers", "*,-nodeipam",
			"--node-monitor-period", "2s"}
	case "kube-scheduler":
		kc := p + "/scheduler.kubeconfig"
		return []string{"--kubeconfig", kc, "--authentication-kubeconfig", kc, "--authorization-kubeconfig", kc,
			"--leader-elect=false", "--bind-address", "127.0.0.1", "--secure-port", "10259"}
	}
	return nil
}
