package vpc

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"strings"
)

// VNI bounds. A VNI is a 24-bit VXLAN/Geneve network identifier; 0 is
// reserved (it means "no VPC" in the data plane).
const (
	MinVNI uint32 = 1
	MaxVNI uint32 = 1<<24 - 1
)

// DefaultBlockPrefixLen is the size of the address blocks nodes claim from a
// subnet unless the subnet says otherwise: a /26 (64 addresses).
const DefaultBlockPrefixLen = 26

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
}

// String returns "name cidr".
func (v VPC) String() string { return fmt.Sprintf("vpc %q %s", v.Name, v.CIDR) }

// Validate checks the name and the CIDR. The VNI is not checked (zero
// before creation).
func (v VPC) Validate() error {
	if err := ValidateName(v.Name); err != nil {
		return fmt.Errorf("vpc %q: %w", v.Name, err)
	}
	if err := validatePrefix(v.CIDR); err != nil {
		return fmt.Errorf("vpc %q: cidr: %w", v.Name, err)
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
	// Zero means DefaultBlockPrefixLen, or the subnet's own length when the
	// subnet is smaller than that.
	BlockPrefixLen int `json:"blockPrefixLen,omitempty"`
}

// Key returns "vpc/name", the subnet's name in messages.
func (s Subnet) Key() string { return s.VPC + "/" + s.Name }

// String returns `subnet "vpc/name" cidr`.
func (s Subnet) String() string { return fmt.Sprintf("subnet %q %s", s.Key(), s.CIDR) }

// WithDefaults returns s with the gateway and block size filled in and the
// CIDR masked. It does not validate.
func (s Subnet) WithDefaults() Subnet {
	if s.CIDR.IsValid() {
		s.CIDR = s.CIDR.Masked()
		if !s.Gateway.IsValid() && s.CIDR.Addr().Is4() && s.CIDR.Bits() <= MaxSubnetPrefixLen {
			s.Gateway = s.CIDR.Addr().Next()
		}
		if s.BlockPrefixLen == 0 {
			s.BlockPrefixLen = max(DefaultBlockPrefixLen, s.CIDR.Bits())
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
		return fmt.Errorf("subnet %q: cidr %s is smaller than a /%d: %w", s.Key(), s.CIDR, MaxSubnetPrefixLen, ErrInvalid)
	}
	if parent.Name != s.VPC {
		return fmt.Errorf("subnet %q: validated against vpc %q: %w", s.Key(), parent.Name, ErrInvalid)
	}
	if !Contains(parent.CIDR, s.CIDR) {
		return fmt.Errorf("subnet %q: cidr %s is outside vpc %q %s: %w", s.Key(), s.CIDR, parent.Name, parent.CIDR, ErrInvalid)
	}
	if !s.Gateway.IsValid() {
		return fmt.Errorf("subnet %q: gateway is not set: %w", s.Key(), ErrInvalid)
	}
	if !s.Gateway.Is4() || !s.CIDR.Contains(s.Gateway) {
		return fmt.Errorf("subnet %q: gateway %s is outside %s: %w", s.Key(), s.Gateway, s.CIDR, ErrInvalid)
	}
	if s.Gateway == s.CIDR.Addr() || s.Gateway == LastAddr(s.CIDR) {
		return fmt.Errorf("subnet %q: gateway %s is the network or broadcast address of %s: %w", s.Key(), s.Gateway, s.CIDR, ErrInvalid)
	}
	if s.BlockPrefixLen < s.CIDR.Bits() || s.BlockPrefixLen > 32 {
		return fmt.Errorf("subnet %q: block prefix length /%d must be between /%d and /32: %w", s.Key(), s.BlockPrefixLen, s.CIDR.Bits(), ErrInvalid)
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
			return fmt.Errorf("subnet %q %s overlaps subnet %q %s: %w", s.Key(), s.CIDR, o.Key(), o.CIDR, ErrInvalid)
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
		return fmt.Errorf("endpoint %q: ip %q is not an IPv4 address: %w", e.Key(), e.IP, ErrInvalid)
	}
	if len(e.MAC) != 0 && len(e.MAC) != 6 {
		return fmt.Errorf("endpoint %q: mac %s is not a 6-byte MAC: %w", e.Key(), e.MAC, ErrInvalid)
	}
	if err := ValidateNodeName(e.Node); err != nil {
		return fmt.Errorf("endpoint %q: node: %w", e.Key(), err)
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
}

// Validate checks the name, the underlay IP and the MAC.
func (n Node) Validate() error {
	if err := ValidateNodeName(n.Name); err != nil {
		return fmt.Errorf("node %q: %w", n.Name, err)
	}
	if !n.UnderlayIP.IsValid() || !n.UnderlayIP.Is4() {
		return fmt.Errorf("node %q: underlay ip %q is not an IPv4 address: %w", n.Name, n.UnderlayIP, ErrInvalid)
	}
	if len(n.UnderlayMAC) != 0 && len(n.UnderlayMAC) != 6 {
		return fmt.Errorf("node %q: underlay mac %s is not a 6-byte MAC: %w", n.Name, n.UnderlayMAC, ErrInvalid)
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
		return fmt.Errorf("name is empty: %w", ErrInvalid)
	}
	if len(name) > 63 || !labelRE.MatchString(name) {
		return fmt.Errorf("name %q is not a DNS-1123 label (lowercase letters, digits, '-', at most 63): %w", name, ErrInvalid)
	}
	return nil
}

// ValidateNodeName checks a node name: a DNS-1123 subdomain (at most 253
// characters).
func ValidateNodeName(name string) error {
	if name == "" {
		return fmt.Errorf("node name is empty: %w", ErrInvalid)
	}
	if len(name) > 253 || !subdomainRE.MatchString(name) {
		return fmt.Errorf("node name %q is not a DNS-1123 subdomain: %w", name, ErrInvalid)
	}
	return nil
}

// validateID accepts printable, non-space ASCII ids of at most 256 bytes.
func validateID(id string) error {
	if id == "" {
		return fmt.Errorf("id is empty: %w", ErrInvalid)
	}
	if len(id) > 256 {
		return fmt.Errorf("id is longer than 256 bytes: %w", ErrInvalid)
	}
	for _, c := range []byte(id) {
		if c <= ' ' || c > '~' {
			return fmt.Errorf("id %q contains a space or non-printable byte: %w", id, ErrInvalid)
		}
	}
	return nil
}

func validatePrefix(p netip.Prefix) error {
	if !p.IsValid() {
		return fmt.Errorf("not set: %w", ErrInvalid)
	}
	if !p.Addr().Is4() {
		return fmt.Errorf("%s is not IPv4: %w", p, ErrInvalid)
	}
	if p.Masked() != p {
		return fmt.Errorf("%s has host bits set (did you mean %s?): %w", p, p.Masked(), ErrInvalid)
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
		return nil, fmt.Errorf("mac %q: %w", s, ErrInvalid)
	}
	if len(m) != 6 {
		return nil, fmt.Errorf("mac %q is not a 6-byte MAC: %w", s, ErrInvalid)
	}
	return m, nil
}

// ParseVPC builds a VPC from user input (a name and a CIDR such as
// "10.1.0.0/16") and validates it.
func ParseVPC(name, cidr string) (VPC, error) {
	p, err := netip.ParsePrefix(strings.TrimSpace(cidr))
	if err != nil {
		return VPC{}, fmt.Errorf("vpc %q: cidr %q: %w", name, cidr, ErrInvalid)
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
		return Subnet{}, fmt.Errorf("subnet %q: cidr %q: %w", s.Key(), cidr, ErrInvalid)
	}
	s.CIDR = p
	if g := strings.TrimSpace(gateway); g != "" {
		if s.Gateway, err = netip.ParseAddr(g); err != nil {
			return Subnet{}, fmt.Errorf("subnet %q: gateway %q: %w", s.Key(), gateway, ErrInvalid)
		}
	}
	if b := strings.TrimPrefix(strings.TrimSpace(blockLen), "/"); b != "" {
		n := 0
		for _, c := range []byte(b) {
			if c < '0' || c > '9' || n > 32 {
				return Subnet{}, fmt.Errorf("subnet %q: block size %q is not a prefix length: %w", s.Key(), blockLen, ErrInvalid)
			}
			n = n*10 + int(c-'0')
		}
		if n == 0 {
			return Subnet{}, fmt.Errorf("subnet %q: block size %q is not a prefix length: %w", s.Key(), blockLen, ErrInvalid)
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
