package agent

import (
	"flag"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/cni-genie/cni-genie/pkg/agentapi"
	"github.com/cni-genie/cni-genie/pkg/datapath"
	"github.com/cni-genie/cni-genie/pkg/directory"
)

// Config is the agent's configuration; every field has a command-line flag
// (see RegisterFlags).
type Config struct {
	// NodeName is this node's name in the store.
	NodeName string
	// Uplink is the underlay interface: its IPv4 address is the tunnel
	// endpoint and the uplink program is attached to it.
	Uplink string
	// PinDir is the bpffs directory holding the pinned maps and links.
	PinDir string
	// Socket is the unix socket served to the CNI plugin.
	Socket string
	// Datastore is the store backend: "etcd" (default; StoreEndpoints) or
	// "kubernetes" (Kubeconfig); see package datastore.
	Datastore string
	// Kubeconfig is the kubeconfig of the kubernetes datastore; empty
	// means the in-cluster service account.
	Kubeconfig string
	// StoreEndpoints are the etcd endpoints (comma separated on the
	// command line); "unix:///path" reaches an etcd on a unix socket.
	StoreEndpoints []string
	// StateDir keeps the IPAM state and the local attachment records.
	StateDir string
	// MetricsAddr serves Prometheus metrics on /metrics; empty disables.
	MetricsAddr string
	// Pprof also serves Go's /debug/pprof/ on MetricsAddr (heap, CPU and
	// goroutine profiles of the agent), off by default.
	Pprof bool
	// GatewayMAC is the MAC the data plane answers the subnet gateways'
	// ARP with (empty: a fixed locally administered default).
	GatewayMAC string
	// XDPPrefilter also attaches the XDP prefilter to the uplink (worth it
	// on NICs with native XDP; a veth uplink needs only the tcx program).
	XDPPrefilter bool
	// MapSizes sets the capacity of the data plane's maps (zero fields
	// keep the compiled-in defaults). Pinned maps keep the size they were
	// created with: changing it needs the pin dir removed (see
	// datapath.MapSizes).
	MapSizes datapath.MapSizes
	// PodAttach is how the pod program is attached to host veths: "tc"
	// (default; see datapath.AttachTC: no RCU grace period on the ADD
	// path) or "tcx" (a pinned tcx link).
	PodAttach string
	// ProcSysNet is where the agent writes net sysctls (empty:
	// /proc/sys/net). In a container that is not privileged /proc/sys is
	// read-only: mount the host's /proc/sys/net elsewhere (a hostPath
	// volume) and name it here. The files resolve in the netns of the
	// writing thread, so one mount serves the host and every pod.
	ProcSysNet string
	// NodeReclaimAfter is how long a node must be dead (heartbeat that
	// old, or node object missing that long) before the agents reclaim
	// its blocks and endpoints (package reclaim); the agent heartbeats
	// every quarter of it. Zero disables both.
	NodeReclaimAfter time.Duration
	// QoSUplinkRate is the uplink's rate in bits/s: non-zero installs the
	// QoS HTB tree on its egress (see qos.go).
	QoSUplinkRate uint64
	// Egress: node labels and egress gateway timing (egress.go).
	Egress EgressConfig
	// UnderlayCheckInterval is how often the peers' underlay next hops
	// are checked (underlay.go); zero disables the check.
	UnderlayCheckInterval time.Duration
	// EndpointMode is how remote endpoints are learned: ModeVPCSync
	// (default) or ModeDirectory (directory.go).
	EndpointMode string
	// DirectoryRPCPort, DirectoryGossipPort, DirectoryShards and
	// DirectoryReplicas configure the directory (directory mode only).
	DirectoryRPCPort, DirectoryGossipPort int
	DirectoryShards, DirectoryReplicas    int
	// Logger receives the agent's logs; nil means slog.Default().
	Logger *slog.Logger
}

// DefaultNodeReclaimAfter is the default of --node-reclaim-after.
const DefaultNodeReclaimAfter = 10 * time.Minute

// DefaultGatewayMAC is the virtual gateway MAC used unless configured.
const DefaultGatewayMAC = "02:67:6e:00:00:01"

// DefaultConfig returns the configuration used when no flag is given.
func DefaultConfig() Config {
	host, _ := os.Hostname()
	return Config{
		NodeName:       strings.ToLower(host),
		Uplink:         "eth0",
		PinDir:         "/sys/fs/bpf/genie",
		Socket:         agentapi.DefaultSocket,
		StoreEndpoints: []string{"http://127.0.0.1:2379"},
		StateDir:       "/var/lib/genie",
		MetricsAddr:    "127.0.0.1:9465",
		GatewayMAC:     DefaultGatewayMAC,
		PodAttach:      string(datapath.AttachTC),

		NodeReclaimAfter:      DefaultNodeReclaimAfter,
		UnderlayCheckInterval: DefaultUnderlayCheckInterval,

		EndpointMode:        ModeVPCSync,
		DirectoryRPCPort:    DefaultDirectoryRPCPort,
		DirectoryGossipPort: DefaultDirectoryGossipPort,
		DirectoryShards:     directory.DefaultShards,
		DirectoryReplicas:   directory.DefaultReplicas,
	}
}

// RegisterFlags binds c's fields to flags on fs; the current values of c
// are the defaults.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.NodeName, "node-name", c.NodeName, "this node's name in the store")
	fs.StringVar(&c.Uplink, "uplink", c.Uplink, "underlay interface: its IPv4 is the tunnel endpoint, the decapsulation program attaches to it")
	fs.StringVar(&c.PinDir, "pin-dir", c.PinDir, "bpffs directory for pinned maps and programs (kept across restarts)")
	fs.StringVar(&c.Socket, "socket", c.Socket, "unix socket served to the genie CNI plugin")
	fs.Func("store-endpoints", "comma-separated etcd endpoints, e.g. http://10.0.0.1:2379 or unix:///run/genie/etcd.sock (default "+strings.Join(c.StoreEndpoints, ",")+")", func(s string) error {
		c.StoreEndpoints = nil
		for _, e := range strings.Split(s, ",") {
			if e = strings.TrimSpace(e); e != "" {
				c.StoreEndpoints = append(c.StoreEndpoints, e)
			}
		}
		if len(c.StoreEndpoints) == 0 {
			return fmt.Errorf("no endpoint given")
		}
		return nil
	})
	c.registerStoreFlags(fs)
	fs.StringVar(&c.StateDir, "state-dir", c.StateDir, "directory for IPAM state and attachment records")
	fs.StringVar(&c.MetricsAddr, "metrics-addr", c.MetricsAddr, "address to serve Prometheus /metrics on (empty disables)")
	fs.BoolVar(&c.Pprof, "pprof", c.Pprof, "also serve Go's /debug/pprof/ profiles on --metrics-addr (for diagnosing the agent)")
	fs.BoolVar(&c.XDPPrefilter, "xdp-prefilter", c.XDPPrefilter, "also attach the XDP prefilter to the uplink (drops foreign Geneve before an skb is built)")
	fs.StringVar(&c.GatewayMAC, "gateway-mac", c.GatewayMAC, "MAC of the virtual subnet gateways answered by BPF")
	fs.StringVar(&c.ProcSysNet, "proc-sys-net", c.ProcSysNet, "where to write net sysctls (empty: /proc/sys/net); a writable mount of the host's /proc/sys/net when /proc/sys is read-only (a container without privileged)")
	fs.StringVar(&c.PodAttach, "pod-attach", c.PodAttach, "how the pod program attaches to host veths: tcx (pinned link) or tc (clsact + cls_bpf filter: no RCU grace period per ADD/DEL, about 10 ms less)")
	fs.DurationVar(&c.NodeReclaimAfter, "node-reclaim-after", c.NodeReclaimAfter,
		"reclaim the IPAM blocks and endpoints of a node whose heartbeat is this old, or whose node object has been gone this long (the agent heartbeats every quarter of it; 0 disables)")
	c.registerQoSFlags(fs)
	c.registerDirectoryFlags(fs) // directory.go
	c.registerEgressFlags(fs)    // egress.go
	fs.DurationVar(&c.UnderlayCheckInterval, "underlay-check-interval", c.UnderlayCheckInterval,
		"check every peer node's underlay next hop (route and ARP) this often, and on node events; exported as genie_underlay_peers (0 disables)")
	def := datapath.DefaultMapSizes()
	fs.Func("max-endpoints", fmt.Sprintf("capacity of the endpoints map: local plus remote endpoints of the VPCs hosted on this node (default %d)", def.Endpoints),
		mapSizeFlag(&c.MapSizes.Endpoints))
	fs.Func("max-pod-interfaces", fmt.Sprintf("capacity of the pod interface map: VPC attachments on this node (default %d)", def.LXC),
		mapSizeFlag(&c.MapSizes.LXC))
	fs.Func("max-nodes", fmt.Sprintf("capacity of the underlay node map (default %d)", def.Nodes),
		mapSizeFlag(&c.MapSizes.Nodes))
	fs.Func("max-vpcs", fmt.Sprintf("capacity of the local VNI map: VPCs with a pod on this node (default %d)", def.VNIs),
		mapSizeFlag(&c.MapSizes.VNIs))
}

// mapSizeFlag parses a positive map capacity into *dst.
func mapSizeFlag(dst *uint32) func(string) error {
	return func(s string) error {
		n, err := strconv.ParseUint(s, 10, 32)
		if err != nil || n == 0 {
			return fmt.Errorf("%q is not a positive number of entries", s)
		}
		*dst = uint32(n)
		return nil
	}
}

// Validate reports the first invalid field.
func (c *Config) Validate() error {
	switch {
	case c.NodeName == "":
		return fmt.Errorf("config: node name is empty")
	case c.Uplink == "":
		return fmt.Errorf("config: uplink is empty")
	case c.PinDir == "":
		return fmt.Errorf("config: pin dir is empty")
	case c.Socket == "":
		return fmt.Errorf("config: socket is empty")
	case len(c.StoreEndpoints) == 0:
		return fmt.Errorf("config: no store endpoint")
	case c.StateDir == "":
		return fmt.Errorf("config: state dir is empty")
	}
	if c.PodAttach != "" && c.PodAttach != string(datapath.AttachTCX) && c.PodAttach != string(datapath.AttachTC) {
		return fmt.Errorf("config: pod attach %q is not %q or %q", c.PodAttach, datapath.AttachTCX, datapath.AttachTC)
	}
	if err := c.StoreConfig().Validate(); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	if _, err := parseMAC(c.GatewayMAC); err != nil {
		return fmt.Errorf("config: gateway mac: %w", err)
	}
	return c.validateDirectory()
}
