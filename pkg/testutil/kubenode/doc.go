// Package kubenode runs a real single-node Kubernetes for tests: etcd,
// kube-apiserver, kube-controller-manager, kube-scheduler, containerd with
// runc, and kubelet, so that pods created through the API get their network
// from the CNI plugin exactly as on a cluster. It is the real-node sibling
// of package kubeapi.
//
// The control plane is complete enough for the real install path: the
// controller-manager runs its controllers under their own service accounts
// (DaemonSets get pods, namespaces get their "default" account and
// kube-root-ca.crt, the node loses its not-ready taint), the scheduler
// places DaemonSet pods, and ServiceAccount admission and projected tokens
// work. kube-apiserver listens on every address of the node at port 443.
//
// # Isolation
//
// Everything runs inside one private network namespace and one private
// mount namespace, held by a sleeping process (unshare --kill-child) and
// entered with nsenter; the host's interfaces, CNI directories, /run and
// sysctls are never touched:
//
//   - the node's network namespace has lo (127.0.0.1, and 10.0.0.1: the
//     kubernetes Service address, where kube-apiserver listens directly,
//     so in-cluster clients work without kube-proxy) and a veth pair eth0
//     (the node IP, 10.250.0.1/24) and eth0p, as kubelet refuses a
//     loopback node IP;
//   - /etc, /opt and /var are overlays of the host's with private upper
//     dirs, so /etc/cni/net.d, /opt/cni/bin, /var/lib/cni and the
//     DaemonSets' hostPath dirs exist only here; /run is a private dir
//     (containerd's fixed /run/containerd and the pods' /run/netns, made a
//     shared mount so hostPath mounts with HostToContainer see new pod
//     namespaces); /sys/fs/bpf is a fresh bpffs instance;
//   - the sysctls kubelet rewrites at start (vm.overcommit_memory,
//     vm.panic_on_oom, kernel.panic, kernel.panic_on_oops) are bind mounts
//     of files already holding its values;
//   - kubelet's cgroups live under a cgroupRoot of their own.
//
// Stop kills the pods' processes (everything in the cgroupRoot), the
// shims and every component, then the holder: the mount namespace and
// with it the pod namespaces, the bpffs instance and every mount die, the
// network namespace and its links too; the cgroups and the temp dir are
// removed. Processes are started with Pdeathsig from one locked thread, so
// a panicking test leaves no component behind.
//
// The test process reaches the API server through a dialer that creates
// its sockets inside the node's network namespace (RESTConfig).
//
// # A second node
//
// AddNode starts a worker: kubelet and containerd only, in a network and
// mount namespace of their own, set up like the first node's. Its eth0
// (WorkerIP) is the other end of the first node's eth0 veth (eth0p), so the
// two nodes share one segment; its default route, and with it the
// kubernetes Service address, goes via the first node. Its kubelet's
// certificates come from the same CA. One worker per node; stopping the
// first node stops the worker first.
//
// # Facts this rests on
//
// shared/notes/real-kubelet-node.md: cgroup v1 needs failCgroupV1=false and
// the cgroupfs driver; no CAP_SYS_RESOURCE means restrict_oom_score_adj;
// containerd 2 gives the pause container the RuntimeDefault seccomp profile,
// so runc is built with seccomp; containerd writes /run/containerd whatever
// its root says.
//
// The binaries come from hack/build-test-bins.sh ($GENIE_TEST_BINDIR,
// default <module root>/_output/bin). Without them, or without root, the
// tests skip with a message; GENIE_REQUIRE_KUBE=1 (CI) makes missing
// binaries a failure; -short skips them.
package kubenode
