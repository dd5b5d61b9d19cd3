package vpc

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"time"
)

// VNI bounds. A VNI is a 24-bit VXLAN/Geneve network identifier; 0 is
// reserved (it means "no VPC" in the data plane).
const (
	MinVNI uint32 = 1
	MaxVNI uint32 = 1<<24 - 1
)

// DefaultBlockPrefixLen is the largest address block nodes claim from a
// subnet unless the subnet says otherwise: a /26 (64 addresses). Smaller
// subnets get smaller blocks, so that every subnet has at least 16 blocks
// (a node cannot borrow addresses from another node's block: with /26
// blocks a /24 subnet could serve pods on 4 nodes only). See
// Subnet.WithDefaults.
const DefaultBlockPrefixLen = 26

// minBlockBits makes the default block at least 4 bits longer than the
// subnet's prefix (16 blocks), down to /30.
const minBlockBits = 4

// MaxSubnetPrefixLen is the longest subnet prefix accepted: a /30 leaves one
// address for a pod after the network, gateway and broadcast addresses.
const MaxSubnetPrefixLen = 30

// ErrInvalid is wrapped by every validation error of this package.
var ErrInvalid = errors.New("invalid")

// VPC is an isolated network. Its CIDR may overlap other VPCs' CIDRs; the
// data plane keys everything by the VNI.
type VPC struct {
	// Name is a DNS-1123 label, unique among VPCs.
	Name string `json:"name"`
	// CIDR is the IPv4 range of the VPC; every subnet lies inside it.
	CIDR netip.Prefix `json:"cidr"`
	// VNI is allocated by the store on creation (lowest free in
	// [MinVNI, MaxVNI]). It is ignored on input.
	VNI uint32 `json:"vni,omitempty"`
	// MTU is the MTU of the VPC's pod interfaces. Zero (the default)
	// derives it from the cluster: the smallest uplink MTU the nodes
	// registered, minus the encapsulation overhead (see PodMTU).
	MTU int `json:"mtu,omitempty"`
	// QoSClass is the default QoS class of the VPC's attachments: "high",
	// "normal" or "low" ("": none). A class set for the pod or the
	// attachment overrides it (pkg/qos).
	QoSClass string `json:"qosClass,omitempty"`
}

// QoSClasses are the values VPC.QoSClass may take besides "" (pkg/qos's
// class names).
var QoSClasses = []string{"high", "normal", "low"}

// MinMTU and MaxMTU bound VPC.MTU (IPv4's minimum datagram size; a
// jumbo frame).
const (
	MinMTU = 576
	MaxMTU = 9000
)

// PodMTU returns the MTU of v's pod interfaces: v.MTU if set, else the
// smallest UplinkMTU among nodes minus overhead (the encapsulation's
// bytes); fallback (e.g. this node's own uplink MTU minus overhead) when
// no node registered one.
func (v VPC) PodMTU(nodes []Node, overhead, fallback int) int {
	if v.MTU != 0 {
		return v.MTU
	}
	least := 0
	for _, n := range nodes {
		if n.UplinkMTU > 0 && (least == 0 || n.UplinkMTU < least) {
			least = n.UplinkMTU
		}
	}
	if least == 0 {
		return fallback
	}
	return least - overhead
}

// String returns "name cidr".
func (v VPC) String() string { return fmt.Sprintf("vpc %q %s", v.Name, v.CIDR) }

// Validate checks the name, the CIDR, the MTU and the QoS class. The VNI is not checked (zero
// before creation).
func (v VPC) Validate() error {
	if err := ValidateName(v.Name); err != nil {
		return fmt.Errorf("vpc %q: %w", v.Name, err)
	}
	if err := validatePrefix(v.CIDR); err != nil {
		return fmt.Errorf("vpc %q: cidr: %w", v.Name, err)
	}
	if v.MTU != 0 && (v.MTU < MinMTU || v.MTU > MaxMTU) {
		return invalidf("vpc %q: mtu %d: want 0 (derived from the nodes) or %d to %d", v.Name, v.MTU, MinMTU, MaxMTU)
	}
	if v.QoSClass != "" && !slices.Contains(QoSClasses, v.QoSClass) {
		return invalidf("vpc %q: qos class %q: want high, normal or low", v.Name, v.QoSClass)
	}
	return nil
}

// Subnet is a range of a VPC that pods attach to. Nodes claim blocks of
// BlockPrefixLen addresses from it and allocate pod IPs locally.
type Subnet struct {
	// VPC names the parent VPC.
	VPC string `json:"vpc"`
	// Name is a DNS-1123 label, unique within the VPC.
	Name string `json:"name"`
	// CIDR lies inside the VPC's CIDR and overlaps no other subnet of
	// the same VPC.
	CIDR netip.Prefix `json:"cidr"`
	// Gateway is the address pods route through (answered by the data
	// plane). Zero means the first host address of CIDR.
	Gateway netip.Addr `json:"gateway,omitzero"`
	// BlockPrefixLen is the prefix length of the IPAM blocks nodes claim.
	// Zero means DefaultBlockPrefixLen for subnets of /22 and larger, and
	// 16 blocks per subnet for smaller ones (/28 blocks in a /24), but no
	// longer than /30 and no shorter than the subnet itself.
	BlockPrefixLen int `json:"blockPrefixLen,omitempty"`
}

// Key returns "vpc/name", the subnet's name in messages.
func (s Subnet) Key() string { return s.VPC + "/" + s.Name }

// String returns `subnet "vpc/name" cidr`.
func (s Subnet) String() string { return fmt.Sprintf("subnet %q %s", s.Key(), s.CIDR) }

// WithDefaults returns s with the gateway and block size filled in. It
// does not validate (a CIDR with host bits set stays invalid).
func (s Subnet) WithDefaults() Subnet {
	if s.CIDR.IsValid() {
		if !s.Gateway.IsValid() && s.CIDR.Addr().Is4() && s.CIDR.Bits() <= MaxSubnetPrefixLen {
			s.Gateway = s.CIDR.Addr().Next()
		}
		if s.BlockPrefixLen == 0 {
			bits := s.CIDR.Bits()
			s.BlockPrefixLen = max(min(max(DefaultBlockPrefixLen, bits+minBlockBits), MaxSubnetPrefixLen), bits)
		}
	}
	return s
}

// Validate checks s on its own and against its parent VPC (CIDR inside
// the VPC's CIDR). Call WithDefaults first; a zero gateway is refused.
// Overlap with sibling subnets is checked by CheckOverlap.
func (s Subnet) Validate(parent VPC) error {
	if err := ValidateName(s.VPC); err != nil {
		return fmt.Errorf("subnet %q: vpc: %w", s.Key(), err)
	}
	if err := ValidateName(s.Name); err != nil {
		return fmt.Errorf("subnet %q: %w", s.Key(), err)
	}
	if err := validatePrefix(s.CIDR); err != nil {
		return fmt.Errorf("subnet %q: cidr: %w", s.Key(), err)
	}
	if s.CIDR.Bits() > MaxSubnetPrefixLen {
		return invalidf("subnet %q: cidr %s is too small (longest prefix accepted: /%d)", s.Key(), s.CIDR, MaxSubnetPrefixLen)
	}
	if parent.Name != s.VPC {
		return invalidf("subnet %q: validated against vpc %q", s.Key(), parent.Name)
	}
	if !Contains(parent.CIDR, s.CIDR) {
		return invalidf("subnet %q: cidr %s is outside vpc %q %s", s.Key(), s.CIDR, parent.Name, parent.CIDR)
	}
	if !s.Gateway.IsValid() {
		return invalidf("subnet %q: gateway is not set", s.Key())
	}
	if !s.Gateway.Is4() || !s.CIDR.Contains(s.Gateway) {
		return invalidf("subnet %q: gateway %s is outside %s", s.Key(), s.Gateway, s.CIDR)
	}
	if s.Gateway == s.CIDR.Addr() || s.Gateway == LastAddr(s.CIDR) {
		return invalidf("subnet %q: gateway %s is the network or broadcast address of %s", s.Key(), s.Gateway, s.CIDR)
	}
	if s.BlockPrefixLen < s.CIDR.Bits() || s.BlockPrefixLen > 32 {
		return invalidf("subnet %q: block prefix length /%d must be between /%d and /32", s.Key(), s.BlockPrefixLen, s.CIDR.Bits())
	}
	return nil
}

// CheckOverlap reports the first subnet of others (same VPC, other name)
// that overlaps s, naming both.
func CheckOverlap(s Subnet, others []Subnet) error {
	for _, o := range others {
		if o.VPC != s.VPC || o.Name == s.Name {
			continue
		}
		if o.CIDR.Overlaps(s.CIDR) {
			return invalidf("subnet %q %s overlaps subnet %q %s", s.Key(), s.CIDR, o.Key(), o.CIDR)
		}
	}
	return nil
}

// Endpoint is one pod attachment to a VPC subnet, published by the node
// agent that created it.
type Endpoint struct {
	VPC    string `json:"vpc"`
	Subnet string `json:"subnet"`
	// VNI is the VPC's VNI, filled in by the store.
	VNI uint32 `json:"vni,omitempty"`
	// ID identifies the attachment: EndpointID(containerID, ifname).
	ID           string `json:"id"`
	PodNamespace string `json:"podNamespace,omitempty"`
	PodName      string `json:"podName,omitempty"`
	// Interface is the interface name inside the pod.
	Interface string     `json:"interface,omitempty"`
	IP        netip.Addr `json:"ip"`
	// MAC is the pod interface's MAC; JSON as "aa:bb:cc:dd:ee:ff".
	MAC net.HardwareAddr `json:"-"`
	// Node is the name of the node hosting the pod.
	Node string `json:"node"`
	// Labels are the pod's labels at ADD (service selectors match them).
	Labels map[string]string `json:"labels,omitempty"`
	// QoS is the class and limits the hosting agent enforces for the
	// endpoint (nil: none), for tools (geniectl status); other agents do
	// not use it.
	QoS *EndpointQoS `json:"qos,omitempty"`
	// Published is when the hosting agent published the endpoint (its
	// wall clock). Other agents observe their propagation latency against
	// it, so it is only as exact as the nodes' clock sync; zero for
	// records written by anything else.
	Published time.Time `json:"published,omitzero"`
}

// EndpointQoS is an endpoint's effective QoS (pkg/qos): its class
// (QoSClasses, "" none) and its egress and ingress rate limits in bits/s
// of its L3 bytes (0: none).
type EndpointQoS struct {
	Class       string `json:"class,omitempty"`
	EgressRate  uint64 `json:"egressRate,omitempty"`
	IngressRate uint64 `json:"ingressRate,omitempty"`
}

// EndpointID returns the endpoint ID of an attachment: "containerID/ifname".
func EndpointID(containerID, ifname string) string { return containerID + "/" + ifname }

// Key returns "vpc/id", the endpoint's name in messages.
func (e Endpoint) Key() string { return e.VPC + "/" + e.ID }

// Validate checks the fields that do not need the store.
func (e Endpoint) Validate() error {
	if err := ValidateName(e.VPC); err != nil {
		return fmt.Errorf("endpoint %q: vpc: %w", e.Key(), err)
	}
	if err := ValidateName(e.Subnet); err != nil {
		return fmt.Errorf("endpoint %q: subnet: %w", e.Key(), err)
	}
	if err := validateID(e.ID); err != nil {
		return fmt.Errorf("endpoint %q: %w", e.Key(), err)
	}
	if !e.IP.IsValid() || !e.IP.Is4() {
		return invalidf("endpoint %q: ip %q is not an IPv4 address", e.Key(), e.IP)
	}
	if len(e.MAC) != 0 && len(e.MAC) != 6 {
		return invalidf("endpoint %q: mac %s is not a 6-byte MAC", e.Key(), e.MAC)
	}
	if err := ValidateNodeName(e.Node); err != nil {
		return fmt.Errorf("endpoint %q: node: %w", e.Key(), err)
	}
	if e.QoS != nil && e.QoS.Class != "" && !slices.Contains(QoSClasses, e.QoS.Class) {
		return invalidf("endpoint %q: qos class %q: want high, normal or low", e.Key(), e.QoS.Class)
	}
	return nil
}

type endpointJSON Endpoint

// MarshalJSON encodes MAC as a colon-separated string.
func (e Endpoint) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		endpointJSON
		MAC string `json:"mac,omitempty"`
	}{endpointJSON(e), macString(e.MAC)})
}

// UnmarshalJSON decodes MAC from a colon-separated string.
func (e *Endpoint) UnmarshalJSON(b []byte) error {
	var v struct {
		endpointJSON
		MAC string `json:"mac,omitempty"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	mac, err := parseMAC(v.MAC)
	if err != nil {
		return fmt.Errorf("endpoint %q: %w", v.VPC+"/"+v.ID, err)
	}
	*e = Endpoint(v.endpointJSON)
	e.MAC = mac
	return nil
}

// Node is a host running the agent, as seen by the other agents: where to
// send encapsulated traffic for its pods.
type Node struct {
	// Name is a DNS-1123 subdomain (the Kubernetes node name).
	Name string `json:"name"`
	// UnderlayIP is the node's tunnel endpoint address.
	UnderlayIP netip.Addr `json:"underlayIP"`
	// UnderlayMAC is the MAC of the node's uplink; JSON as a string.
	UnderlayMAC net.HardwareAddr `json:"-"`
	// Uplink is the name of the node's underlay interface (informational).
	Uplink string `json:"uplink,omitempty"`
	// UplinkMTU is the MTU of the node's uplink (0: unknown); the smallest
	// in the cluster sets the default pod MTU of every VPC (VPC.PodMTU).
	UplinkMTU int `json:"uplinkMTU,omitempty"`
	// Labels are the node's labels (the agent's --node-labels), for
	// selecting nodes, e.g. egress gateways by label.
	Labels map[string]string `json:"labels,omitempty"`
	// Heartbeat is when the node's agent last reported itself alive (it
	// re-registers periodically); zero when the store keeps none. Dead
	// nodes are found by it (package reclaim).
	Heartbeat time.Time `json:"heartbeat,omitzero"`
}

// Validate checks the name, the underlay IP and the MAC.
func (n Node) Validate() error {
	if err := ValidateNodeName(n.Name); err != nil {
		return fmt.Errorf("node %q: %w", n.Name, err)
	}
	if !n.UnderlayIP.IsValid() || !n.UnderlayIP.Is4() {
		return invalidf("node %q: underlay ip %q is not an IPv4 address", n.Name, n.UnderlayIP)
	}
	if len(n.UnderlayMAC) != 0 && len(n.UnderlayMAC) != 6 {
		return invalidf("node %q: underlay mac %s is not a 6-byte MAC", n.Name, n.UnderlayMAC)
	}
	return nil
}

type nodeJSON Node

// MarshalJSON encodes UnderlayMAC as a colon-separated string.
func (n Node) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		nodeJSON
		MAC string `json:"underlayMAC,omitempty"`
	}{nodeJSON(n), macString(n.UnderlayMAC)})
}

// UnmarshalJSON decodes UnderlayMAC from a colon-separated string.
func (n *Node) UnmarshalJSON(b []byte) error {
	var v struct {
		nodeJSON
		MAC string `json:"underlayMAC,omitempty"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	mac, err := parseMAC(v.MAC)
	if err != nil {
		return fmt.Errorf("node %q: %w", v.Name, err)
	}
	*n = Node(v.nodeJSON)
	n.UnderlayMAC = mac
	return nil
}

var (
	labelRE     = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)
	subdomainRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)
)

// ValidateName checks a VPC or subnet name: a DNS-1123 label (lowercase
// alphanumerics and '-', at most 63 characters).
func ValidateName(name string) error {
	if name == "" {
		return invalidf("name is empty")
	}
	if len(name) > 63 || !labelRE.MatchString(name) {
		return invalidf("name %q is not a DNS-1123 label (lowercase letters, digits, '-', at most 63)", name)
	}
	return nil
}

// ValidateNodeName checks a node name: a DNS-1123 subdomain (at most 253
// characters).
func ValidateNodeName(name string) error {
	if name == "" {
		return invalidf("node name is empty")
	}
	if len(name) > 253 || !subdomainRE.MatchString(name) {
		return invalidf("node name %q is not a DNS-1123 subdomain", name)
	}
	return nil
}

// validateID accepts printable, non-space ASCII ids of at most 256 bytes.
func validateID(id string) error {
	if id == "" {
		return invalidf("id is empty")
	}
	if len(id) > 256 {
		return invalidf("id is longer than 256 bytes")
	}
	for _, c := range []byte(id) {
		if c <= ' ' || c > '~' {
			return invalidf("id %q contains a space or non-printable byte", id)
		}
	}
	return nil
}

func validatePrefix(p netip.Prefix) error {
	if !p.IsValid() {
		return invalidf("not set")
	}
	if !p.Addr().Is4() {
		return invalidf("%s is not IPv4", p)
	}
	if p.Masked() != p {
		return invalidf("%s has host bits set (did you mean %s?)", p, p.Masked())
	}
	return nil
}

// Contains reports whether prefix outer contains all of inner.
func Contains(outer, inner netip.Prefix) bool {
	return outer.Bits() <= inner.Bits() && outer.Contains(inner.Addr())
}

// LastAddr returns the last (broadcast) address of an IPv4 prefix.
func LastAddr(p netip.Prefix) netip.Addr {
	a := p.Masked().Addr().As4()
	v := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3])
	v |= uint32(1)<<(32-p.Bits()) - 1
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

func macString(m net.HardwareAddr) string {
	if len(m) == 0 {
		return ""
	}
	return m.String()
}

func parseMAC(s string) (net.HardwareAddr, error) {
	if s == "" {
		return nil, nil
	}
	m, err := net.ParseMAC(strings.TrimSpace(s))
	if err != nil {
		return nil, invalidf("mac %q is not a MAC address", s)
	}
	if len(m) != 6 {
		return nil, invalidf("mac %q is not a 6-byte MAC", s)
	}
	return m, nil
}

// ParseVPC builds a VPC from user input (a name and a CIDR such as
// "10.1.0.0/16") and validates it.
func ParseVPC(name, cidr string) (VPC, error) {
	p, err := netip.ParsePrefix(strings.TrimSpace(cidr))
	if err != nil {
		return VPC{}, invalidf("vpc %q: cidr %q is not a CIDR like 10.1.0.0/16", name, cidr)
	}
	v := VPC{Name: name, CIDR: p}
	return v, v.Validate()
}

// ParseSubnet builds a subnet from user input: a CIDR, an optional gateway
// ("" = first host) and an optional block size ("" = default, else "/26"
// or "26"). It fills defaults and checks everything that does not need the
// parent VPC (Validate does the rest).
func ParseSubnet(vpcName, name, cidr, gateway, blockLen string) (Subnet, error) {
	s := Subnet{VPC: vpcName, Name: name}
	p, err := netip.ParsePrefix(strings.TrimSpace(cidr))
	if err != nil {
		return Subnet{}, invalidf("subnet %q: cidr %q is not a CIDR like 10.1.0.0/24", s.Key(), cidr)
	}
	s.CIDR = p
	if g := strings.TrimSpace(gateway); g != "" {
		if s.Gateway, err = netip.ParseAddr(g); err != nil {
			return Subnet{}, invalidf("subnet %q: gateway %q is not an IP address", s.Key(), gateway)
		}
	}
	if b := strings.TrimPrefix(strings.TrimSpace(blockLen), "/"); b != "" {
		n := 0
		for _, c := range []byte(b) {
			if c < '0' || c > '9' || n > 32 {
				return Subnet{}, invalidf("subnet %q: block size %q is not a prefix length", s.Key(), blockLen)
			}
			n = n*10 + int(c-'0')
		}
		if n == 0 {
			return Subnet{}, invalidf("subnet %q: block size %q is not a prefix length", s.Key(), blockLen)
		}
		s.BlockPrefixLen = n
	}
	if err := validatePrefix(s.CIDR); err != nil {
		return Subnet{}, fmt.Errorf("subnet %q: cidr: %w", s.Key(), err)
	}
	s = s.WithDefaults()
	// Validate against a VPC equal to the subnet: checks all but containment.
	if err := s.Validate(VPC{Name: s.VPC, CIDR: s.CIDR}); err != nil {
		return Subnet{}, err
	}
	return s, nil
}

// invalidError is a validation failure: its message is the sentence alone,
// and errors.Is(err, ErrInvalid) holds.
type invalidError struct{ msg string }

// Error returns the sentence.
func (e *invalidError) Error() string { return e.msg }

// Is makes errors.Is(err, ErrInvalid) hold.
func (e *invalidError) Is(target error) bool { return target == ErrInvalid }

func invalidf(format string, args ...any) error {
	return &invalidError{msg: fmt.Sprintf(format, args...)}
}

// Assignable reports whether a may be given to a pod: inside the subnet and
// neither its network, broadcast nor gateway address.
func (s Subnet) Assignable(a netip.Addr) bool {
	return a.Is4() && s.CIDR.Contains(a) && a != s.CIDR.Addr() && a != LastAddr(s.CIDR) && a != s.Gateway
}
