package kubestore

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/cni-genie/cni-genie/pkg/store"
	"github.com/cni-genie/cni-genie/pkg/vpc"
)

// API group and version of the CRDs in deploy/crds/genie.cni.io_*.yaml.
const (
	Group   = "genie.cni.io"
	Version = "v1alpha1"
)

// Labels the store puts on its objects. Lists and watches select on them,
// so an agent watching one VPC receives only that VPC's endpoints.
const (
	// LabelVPC names the VPC of a Subnet, IPAMBlock, VPCEndpoint or
	// EndpointIndex.
	LabelVPC = "genie.cni.io/vpc"
	// LabelSubnet names the subnet of an IPAMBlock or VPCEndpoint.
	LabelSubnet = "genie.cni.io/subnet"
	// LabelScope is set on every object of a store with Options.Scope.
	LabelScope = "genie.cni.io/scope"
)

// annotationToken on a Subnet is the token of the pendingSubnet entry it was
// created from, so a creator recognizes a subnet materialized for it.
const annotationToken = "genie.cni.io/creation-token"

// resource is one CRD of the store.
type resource struct {
	gvr  schema.GroupVersionResource
	kind string
}

func res(plural, kind string) resource {
	return resource{schema.GroupVersionResource{Group: Group, Version: Version, Resource: plural}, kind}
}

var (
	resVPC      = res("vpcs", "VPC")
	resSubnet   = res("subnets", "Subnet")
	resNode     = res("genienodes", "GenieNode")
	resBlock    = res("ipamblocks", "IPAMBlock")
	resEndpoint = res("vpcendpoints", "VPCEndpoint")
	resVNIClaim = res("vniclaims", "VNIClaim")
	resIndex    = res("endpointindexes", "EndpointIndex")
	resService  = res("vpcservices", "VPCService")
	resVIP      = res("vpcservicevips", "VPCServiceVIP")
	resEgress   = res("vpcegressgateways", "VPCEgressGateway")
)

// CRDFiles are the store's CRDs, files of deploy/crds. All must be
// installed (kubectl apply -f) before New succeeds.
var CRDFiles = []string{
	"genie.cni.io_vpcs.yaml",
	"genie.cni.io_subnets.yaml",
	"genie.cni.io_genienodes.yaml",
	"genie.cni.io_ipamblocks.yaml",
	"genie.cni.io_vpcendpoints.yaml",
	"genie.cni.io_vniclaims.yaml",
	"genie.cni.io_endpointindexes.yaml",
	"genie.cni.io_vpcservices.yaml",
	"genie.cni.io_vpcservicevips.yaml",
	"genie.cni.io_vpcegressgateways.yaml",
}

// allResources lists every CRD the store needs, for the start-up check.
var allResources = []resource{resVPC, resSubnet, resNode, resBlock, resEndpoint, resVNIClaim, resIndex, resService, resVIP, resEgress}

// header is the part every object shares.
type header struct {
	APIVersion string            `json:"apiVersion"`
	Kind       string            `json:"kind"`
	Metadata   metav1.ObjectMeta `json:"metadata"`
}

func (h *header) meta() *metav1.ObjectMeta { return &h.Metadata }

// object is implemented by the pointer of every CR struct.
type object interface{ meta() *metav1.ObjectMeta }

type vpcObject struct {
	header
	Spec   vpcSpec   `json:"spec"`
	Status vpcStatus `json:"status,omitzero"`
}

type vpcSpec struct {
	CIDR string `json:"cidr"`
	MTU  int    `json:"mtu,omitempty"`
	// QoSClass is vpc.VPC.QoSClass.
	QoSClass string `json:"qosClass,omitempty"`
}

type vpcStatus struct {
	VNI           uint32         `json:"vni,omitempty"`
	PendingSubnet *pendingSubnet `json:"pendingSubnet,omitempty"`
	// Services counts service creations: each bumps it (subnetFence).
	Services int64 `json:"services,omitempty"`
}

// pendingSubnet is a subnet creation that passed the overlap check under
// the VPC's resourceVersion; whoever finds it creates the Subnet object.
type pendingSubnet struct {
	Name           string `json:"name"`
	CIDR           string `json:"cidr"`
	Gateway        string `json:"gateway"`
	BlockPrefixLen int    `json:"blockPrefixLen"`
	Token          string `json:"token"`
}

type subnetObject struct {
	header
	Spec   subnetSpec   `json:"spec"`
	Status subnetStatus `json:"status,omitzero"`
}

type subnetSpec struct {
	VPC            string `json:"vpc"`
	Name           string `json:"name"`
	CIDR           string `json:"cidr"`
	Gateway        string `json:"gateway"`
	BlockPrefixLen int    `json:"blockPrefixLen"`
}

type subnetStatus struct {
	Deleting bool `json:"deleting,omitempty"`
}

type nodeObject struct {
	header
	Spec nodeSpec `json:"spec"`
}

type nodeSpec struct {
	Name        string `json:"name"`
	UnderlayIP  string `json:"underlayIP"`
	UnderlayMAC string `json:"underlayMAC,omitempty"`
	Uplink      string `json:"uplink,omitempty"`
	UplinkMTU   int    `json:"uplinkMTU,omitempty"`
	// Labels are the node's labels (vpc.Node.Labels).
	Labels map[string]string `json:"labels,omitempty"`
}

func (a nodeSpec) equal(b nodeSpec) bool {
	return a.Name == b.Name && a.UnderlayIP == b.UnderlayIP && a.UnderlayMAC == b.UnderlayMAC &&
		a.Uplink == b.Uplink && a.UplinkMTU == b.UplinkMTU && maps.Equal(a.Labels, b.Labels)
}

type blockObject struct {
	header
	Spec blockSpec `json:"spec"`
}

type blockSpec struct {
	VPC       string `json:"vpc"`
	Subnet    string `json:"subnet"`
	SubnetUID string `json:"subnetUID"`
	CIDR      string `json:"cidr"`
	Node      string `json:"node"`
}

type endpointObject struct {
	header
	Spec endpointSpec `json:"spec"`
}

type endpointSpec struct {
	VPC          string `json:"vpc"`
	Subnet       string `json:"subnet"`
	VNI          uint32 `json:"vni,omitempty"`
	ID           string `json:"id"`
	PodNamespace string `json:"podNamespace,omitempty"`
	PodName      string `json:"podName,omitempty"`
	Interface    string `json:"interface,omitempty"`
	IP           string `json:"ip"`
	MAC          string `json:"mac,omitempty"`
	Node         string `json:"node"`
	Published    string `json:"published,omitempty"` // RFC 3339 with nanoseconds
	// Labels are the pod's labels at ADD (service selectors match them).
	Labels map[string]string `json:"labels,omitempty"`
	// QoS is vpc.Endpoint.QoS.
	QoS *vpc.EndpointQoS `json:"qos,omitempty"`
}

type vniClaimObject struct {
	header
	Spec vniClaimSpec `json:"spec"`
}

type vniClaimSpec struct {
	VNI    uint32 `json:"vni"`
	VPC    string `json:"vpc"`
	VPCUID string `json:"vpcUID"`
}

type indexObject struct {
	header
	Spec indexSpec `json:"spec"`
}

type indexSpec struct {
	VPC string `json:"vpc"`
	ID  string `json:"id"`
	IP  string `json:"ip"`
	// Node is the node whose agent wrote the index (the endpoint's node),
	// so admission can scope an agent's writes to its own node.
	Node string `json:"node,omitempty"`
}

// --- names (see doc.go) ---

// name joins parts with dots below the store's scope.
func (s *Store) name(parts ...string) string {
	n := strings.Join(parts, ".")
	if s.scope != "" {
		n = s.scope + "." + n
	}
	return n
}

// unscope strips the scope prefix from an object name.
func (s *Store) unscope(n string) string {
	if s.scope != "" {
		return strings.TrimPrefix(n, s.scope+".")
	}
	return n
}

func (s *Store) vpcName(v string) string        { return s.name(v) }
func (s *Store) subnetName(v, sn string) string { return s.name(v, sn) }
func (s *Store) nodeName(n string) string       { return s.name(n) }
func (s *Store) vniName(n uint32) string        { return s.name(fmt.Sprintf("vni-%d", n)) }
func (s *Store) blockName(v, sn string, p netip.Prefix) string {
	return s.name(v, sn, dashed(p.Addr())+"-"+fmt.Sprint(p.Bits()))
}
func (s *Store) endpointName(v string, ip netip.Addr) string { return s.name(v, dashed(ip)) }

// indexName hashes the id: ids ("<containerID>/<ifname>") are not valid
// object names, and a hash keeps the lookup a GET.
func (s *Store) indexName(v, id string) string {
	h := sha256.Sum256([]byte(id))
	return s.name(v, hex.EncodeToString(h[:20]))
}

// dashed writes 10.1.0.64 as 10-1-0-64 (a DNS label).
func dashed(a netip.Addr) string { return strings.ReplaceAll(a.String(), ".", "-") }

// newHeader returns the header of a new object of r named name.
func (s *Store) newHeader(r resource, name string, labels ...string) header {
	h := header{APIVersion: Group + "/" + Version, Kind: r.kind, Metadata: metav1.ObjectMeta{Name: name}}
	if len(labels) > 0 || s.scope != "" {
		h.Metadata.Labels = map[string]string{}
		for i := 0; i+1 < len(labels); i += 2 {
			h.Metadata.Labels[labels[i]] = labels[i+1]
		}
		if s.scope != "" {
			h.Metadata.Labels[LabelScope] = s.scope
		}
	}
	return h
}

// selector returns a label selector for the given key/value pairs within
// the store's scope ("without a scope label" for the unscoped store).
func (s *Store) selector(kv ...string) string {
	var parts []string
	if s.scope != "" {
		parts = append(parts, LabelScope+"="+s.scope)
	} else {
		parts = append(parts, "!"+LabelScope)
	}
	for i := 0; i+1 < len(kv); i += 2 {
		parts = append(parts, kv[i]+"="+kv[i+1])
	}
	return strings.Join(parts, ",")
}

func ownerRef(r resource, m *metav1.ObjectMeta) metav1.OwnerReference {
	return metav1.OwnerReference{APIVersion: Group + "/" + Version, Kind: r.kind, Name: m.Name, UID: m.UID}
}

// --- conversions ---

func (s *Store) toVPC(o *vpcObject) (vpc.VPC, error) {
	p, err := netip.ParsePrefix(o.Spec.CIDR)
	if err != nil {
		return vpc.VPC{}, fmt.Errorf("vpc object %q: cidr %q: %w", o.Metadata.Name, o.Spec.CIDR, vpc.ErrInvalid)
	}
	return vpc.VPC{Name: s.unscope(o.Metadata.Name), CIDR: p, VNI: o.Status.VNI, MTU: o.Spec.MTU, QoSClass: o.Spec.QoSClass}, nil
}

func toSubnet(o *subnetObject) (vpc.Subnet, error) {
	p, err1 := netip.ParsePrefix(o.Spec.CIDR)
	g, err2 := netip.ParseAddr(o.Spec.Gateway)
	if err1 != nil || err2 != nil {
		return vpc.Subnet{}, fmt.Errorf("subnet object %q: cidr %q gateway %q: %w", o.Metadata.Name, o.Spec.CIDR, o.Spec.Gateway, vpc.ErrInvalid)
	}
	return vpc.Subnet{VPC: o.Spec.VPC, Name: o.Spec.Name, CIDR: p, Gateway: g, BlockPrefixLen: o.Spec.BlockPrefixLen}, nil
}

func toNode(o *nodeObject) (vpc.Node, error) {
	n := vpc.Node{Name: o.Spec.Name, Uplink: o.Spec.Uplink, UplinkMTU: o.Spec.UplinkMTU, Labels: o.Spec.Labels}
	var err error
	if n.UnderlayIP, err = netip.ParseAddr(o.Spec.UnderlayIP); err != nil {
		return vpc.Node{}, fmt.Errorf("node object %q: underlay ip %q: %w", o.Metadata.Name, o.Spec.UnderlayIP, vpc.ErrInvalid)
	}
	if o.Spec.UnderlayMAC != "" {
		if n.UnderlayMAC, err = net.ParseMAC(o.Spec.UnderlayMAC); err != nil {
			return vpc.Node{}, fmt.Errorf("node object %q: underlay mac %q: %w", o.Metadata.Name, o.Spec.UnderlayMAC, vpc.ErrInvalid)
		}
	}
	return n, nil
}

func toBlock(o *blockObject) (store.Block, error) {
	p, err := netip.ParsePrefix(o.Spec.CIDR)
	if err != nil {
		return store.Block{}, fmt.Errorf("block object %q: cidr %q: %w", o.Metadata.Name, o.Spec.CIDR, vpc.ErrInvalid)
	}
	return store.Block{VPC: o.Spec.VPC, Subnet: o.Spec.Subnet, CIDR: p, Node: o.Spec.Node}, nil
}

func toEndpoint(o *endpointObject) (vpc.Endpoint, error) {
	sp := o.Spec
	e := vpc.Endpoint{VPC: sp.VPC, Subnet: sp.Subnet, VNI: sp.VNI, ID: sp.ID, PodNamespace: sp.PodNamespace,
		PodName: sp.PodName, Interface: sp.Interface, Node: sp.Node, Labels: sp.Labels, QoS: sp.QoS}
	var err error
	if e.IP, err = netip.ParseAddr(sp.IP); err != nil {
		return vpc.Endpoint{}, fmt.Errorf("endpoint object %q: ip %q: %w", o.Metadata.Name, sp.IP, vpc.ErrInvalid)
	}
	if sp.MAC != "" {
		if e.MAC, err = net.ParseMAC(sp.MAC); err != nil {
			return vpc.Endpoint{}, fmt.Errorf("endpoint object %q: mac %q: %w", o.Metadata.Name, sp.MAC, vpc.ErrInvalid)
		}
	}
	if sp.Published != "" {
		if e.Published, err = time.Parse(time.RFC3339Nano, sp.Published); err != nil {
			return vpc.Endpoint{}, fmt.Errorf("endpoint object %q: published %q: %w", o.Metadata.Name, sp.Published, vpc.ErrInvalid)
		}
	}
	return e, nil
}

func endpointSpecOf(e vpc.Endpoint) endpointSpec {
	sp := endpointSpec{VPC: e.VPC, Subnet: e.Subnet, VNI: e.VNI, ID: e.ID, PodNamespace: e.PodNamespace,
		PodName: e.PodName, Interface: e.Interface, IP: e.IP.String(), Node: e.Node, Labels: e.Labels, QoS: e.QoS}
	if len(e.MAC) > 0 {
		sp.MAC = e.MAC.String()
	}
	if !e.Published.IsZero() {
		sp.Published = e.Published.UTC().Format(time.RFC3339Nano)
	}
	return sp
}
