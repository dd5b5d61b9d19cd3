package service

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"

	"github.com/cni-genie/cni-genie/pkg/vpc"
)

// Protocol is a service port's L4 protocol.
type Protocol string

// Protocols a service port may use.
const (
	TCP Protocol = "TCP"
	UDP Protocol = "UDP"
)

// Affinity is a service's session affinity.
type Affinity string

// Session affinities.
const (
	// AffinityNone spreads every flow by its 5-tuple.
	AffinityNone Affinity = "None"
	// AffinityClientIP sends every flow of a client address to one
	// backend (as long as the Maglev table keeps that slot).
	AffinityClientIP Affinity = "ClientIP"
)

// ErrConflict is wrapped by Check's and CheckSubnet's errors about a clash
// with another object (a VIP inside a subnet, a VIP held by another
// service, a subnet covering a VIP). Stores
// report them as store.ErrConflict.
var ErrConflict = errors.New("conflict")

// Port is one frontend port of a service.
type Port struct {
	// Name is optional (a DNS-1123 label), unique within the service.
	Name     string   `json:"name,omitempty"`
	Port     uint16   `json:"port"`
	Protocol Protocol `json:"protocol"`
	// TargetPort is the backends' port; 0 means Port.
	TargetPort uint16 `json:"targetPort,omitempty"`
}

// Service is a load-balanced address of a VPC: pods of the VPC reach its
// VIP and ports, and each flow is sent to one of its backends.
type Service struct {
	// VPC names the VPC the service lives in.
	VPC string `json:"vpc"`
	// Name is a DNS-1123 label, unique within the VPC.
	Name string `json:"name"`
	// VIP is the requested address; zero asks the store to allocate one
	// (AllocateVIP). It lies inside the VPC's CIDR, so pods route it to
	// their gateway like any address of the VPC, and outside every subnet.
	VIP   netip.Addr `json:"vip,omitzero"`
	Ports []Port     `json:"ports"`
	// Selector picks the backends: the endpoints of the VPC whose labels
	// contain all of these. Exclusive with Endpoints.
	Selector map[string]string `json:"selector,omitempty"`
	// Endpoints lists the backend addresses explicitly (in the VPC).
	Endpoints []netip.Addr `json:"endpoints,omitempty"`
	// PodNamespace, if set, restricts the selector to endpoints of pods
	// in that Kubernetes namespace (a Service's own namespace).
	PodNamespace string `json:"podNamespace,omitempty"`
	// Affinity is AffinityNone ("" too) or AffinityClientIP.
	Affinity Affinity `json:"affinity,omitempty"`
	// TableSize is the Maglev table size M (a prime); 0 means
	// DefaultTableSize.
	TableSize int `json:"tableSize,omitempty"`
}

// Key returns "vpc/name".
func (s Service) Key() string { return s.VPC + "/" + s.Name }

// String returns `service "vpc/name" vip`.
func (s Service) String() string { return fmt.Sprintf("service %q %s", s.Key(), s.VIP) }

// WithDefaults fills the defaults: target ports, affinity, table size.
func (s Service) WithDefaults() Service {
	s.Ports = slices.Clone(s.Ports)
	for i := range s.Ports {
		if s.Ports[i].TargetPort == 0 {
			s.Ports[i].TargetPort = s.Ports[i].Port
		}
		s.Ports[i].Protocol = Protocol(strings.ToUpper(string(s.Ports[i].Protocol)))
		if s.Ports[i].Protocol == "" {
			s.Ports[i].Protocol = TCP
		}
	}
	if s.Affinity == "" {
		s.Affinity = AffinityNone
	}
	if s.TableSize == 0 {
		s.TableSize = DefaultTableSize
	}
	return s
}

func invalid(format string, args ...any) error {
	return fmt.Errorf(format+": %w", append(args, vpc.ErrInvalid)...)
}

// Validate checks s on its own (after WithDefaults): names, ports and
// their clashes, the selector or endpoint list, affinity, table size.
func (s Service) Validate() error {
	if err := vpc.ValidateName(s.VPC); err != nil {
		return fmt.Errorf("service %q: vpc: %w", s.Key(), err)
	}
	if err := vpc.ValidateName(s.Name); err != nil {
		return fmt.Errorf("service %q: %w", s.Key(), err)
	}
	if s.VIP.IsValid() && (!s.VIP.Is4() || s.VIP.IsUnspecified() || s.VIP.IsLoopback() || s.VIP.IsMulticast()) {
		return invalid("service %q: vip %s is not a unicast ipv4 address", s.Key(), s.VIP)
	}
	if len(s.Ports) == 0 {
		return invalid("service %q: no ports", s.Key())
	}
	seen := map[string]int{}
	names := map[string]bool{}
	for i, p := range s.Ports {
		if p.Port == 0 {
			return invalid("service %q: port %d: port 0", s.Key(), i)
		}
		if p.Protocol != TCP && p.Protocol != UDP {
			return invalid("service %q: port %d: protocol %q is not TCP or UDP", s.Key(), p.Port, p.Protocol)
		}
		k := fmt.Sprintf("%d/%s", p.Port, p.Protocol)
		if j, dup := seen[k]; dup {
			return invalid("service %q: port clash: ports %d and %d are both %s", s.Key(), j, i, k)
		}
		seen[k] = i
		if p.Name != "" {
			if err := vpc.ValidateName(p.Name); err != nil {
				return fmt.Errorf("service %q: port name: %w", s.Key(), err)
			}
			if names[p.Name] {
				return invalid("service %q: port clash: two ports named %q", s.Key(), p.Name)
			}
			names[p.Name] = true
		}
	}
	if len(s.Selector) > 0 && len(s.Endpoints) > 0 {
		return invalid("service %q: both a selector and an endpoint list", s.Key())
	}
	for k := range s.Selector {
		if k == "" {
			return invalid("service %q: empty selector key", s.Key())
		}
	}
	for _, e := range s.Endpoints {
		if !e.Is4() {
			return invalid("service %q: endpoint %s is not ipv4", s.Key(), e)
		}
	}
	switch s.Affinity {
	case "", AffinityNone, AffinityClientIP:
	default:
		return invalid("service %q: affinity %q is not None or ClientIP", s.Key(), s.Affinity)
	}
	if s.TableSize != 0 {
		if _, err := Maglev(nil, s.TableSize); err != nil {
			return invalid("service %q: %v", s.Key(), err)
		}
	}
	return nil
}

// Check validates s against its VPC: the VPC's subnets and the other
// services of the VPC (s itself, by name, is ignored). A set VIP must lie
// inside the VPC's CIDR, outside every subnet, and be held by no other
// service.
func Check(s Service, parent vpc.VPC, subnets []vpc.Subnet, others []Service) error {
	if err := s.Validate(); err != nil {
		return err
	}
	if !s.VIP.IsValid() {
		return nil
	}
	if !parent.CIDR.Contains(s.VIP) {
		return invalid("service %q: vip %s is outside vpc %q %s (pods route only the vpc to their gateway)", s.Key(), s.VIP, parent.Name, parent.CIDR)
	}
	for _, sn := range subnets {
		if sn.VPC == s.VPC && sn.CIDR.Contains(s.VIP) {
			return fmt.Errorf("service %q: vip %s is inside subnet %q %s: %w", s.Key(), s.VIP, sn.Key(), sn.CIDR, ErrConflict)
		}
	}
	for _, o := range others {
		if o.VPC == s.VPC && o.Name != s.Name && o.VIP == s.VIP {
			return fmt.Errorf("service %q: vip %s is held by service %q: %w", s.Key(), s.VIP, o.Key(), ErrConflict)
		}
	}
	return nil
}

// CheckSubnet is Check's rule seen from the other side: a subnet sn (being
// created) must not cover the VIP of a service of its VPC.
func CheckSubnet(sn vpc.Subnet, services []Service) error {
	for _, s := range services {
		if s.VPC == sn.VPC && s.VIP.IsValid() && sn.CIDR.Contains(s.VIP) {
			return fmt.Errorf("subnet %q %s covers vip %s of service %q: %w", sn.Key(), sn.CIDR, s.VIP, s.Key(), ErrConflict)
		}
	}
	return nil
}

// AllocateVIP returns the highest address of the VPC's range r (network
// and broadcast addresses excluded) that is in no subnet of the VPC and
// held by no service of it: VIPs fill the range from the top, subnets
// usually from the bottom. Each VPC allocates on its own, so the same VIP
// can exist in every VPC.
func AllocateVIP(r netip.Prefix, subnets []vpc.Subnet, others []Service) (netip.Addr, error) {
	held := map[netip.Addr]bool{}
	for _, o := range others {
		held[o.VIP] = true
	}
	first := r.Masked().Addr()
	for a := vpc.LastAddr(r).Prev(); a.IsValid() && first.Less(a); a = a.Prev() {
		if held[a] {
			continue
		}
		inSubnet := false
		for _, sn := range subnets {
			if sn.CIDR.Contains(a) {
				inSubnet = true
				break
			}
		}
		if !inSubnet {
			return a, nil
		}
	}
	return netip.Addr{}, fmt.Errorf("no free vip in %s: %w", r, ErrConflict)
}

// Selects reports whether the service's selector picks an endpoint with
// these labels. A service without a selector selects nothing by label.
func (s Service) Selects(labels map[string]string) bool {
	if len(s.Selector) == 0 {
		return false
	}
	for k, v := range s.Selector {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// Backend is one resolved backend of a service: an endpoint of its VPC.
type Backend struct {
	IP netip.Addr `json:"ip"`
	// Node hosts the endpoint ("" for an explicit address the resolver
	// found no endpoint for).
	Node string `json:"node,omitempty"`
	// Endpoint is the endpoint's ID ("" as for Node).
	Endpoint string `json:"endpoint,omitempty"`
}

// Backends is the resolved backend set of one service, written by the
// elected resolver and read by the agents of the nodes hosting its VPC
// (a slice-like record: agents need no copy of every endpoint).
type Backends struct {
	VPC     string `json:"vpc"`
	Service string `json:"service"`
	// Backends is sorted by IP.
	Backends []Backend `json:"backends"`
}

// Key returns "vpc/service".
func (b Backends) Key() string { return b.VPC + "/" + b.Service }

// Resolve computes the backends of s from the endpoints of its VPC:
// the selected ones, or the listed addresses (with their endpoint if one
// exists). Sorted by IP.
func Resolve(s Service, endpoints []vpc.Endpoint) Backends {
	out := Backends{VPC: s.VPC, Service: s.Name}
	byIP := map[netip.Addr]vpc.Endpoint{}
	for _, e := range endpoints {
		if e.VPC != s.VPC {
			continue
		}
		byIP[e.IP] = e
		if s.PodNamespace != "" && e.PodNamespace != s.PodNamespace {
			continue
		}
		if s.Selects(e.Labels) {
			out.Backends = append(out.Backends, Backend{IP: e.IP, Node: e.Node, Endpoint: e.ID})
		}
	}
	for _, a := range s.Endpoints {
		b := Backend{IP: a}
		if e, ok := byIP[a]; ok {
			b.Node, b.Endpoint = e.Node, e.ID
		}
		out.Backends = append(out.Backends, b)
	}
	sort.Slice(out.Backends, func(i, j int) bool { return out.Backends[i].IP.Less(out.Backends[j].IP) })
	out.Backends = slices.CompactFunc(out.Backends, func(a, b Backend) bool { return a.IP == b.IP })
	return out
}

// Table returns the Maglev table of port p of service s over backends b:
// slot -> backend address and target port. Nil when b is empty.
func (s Service) Table(b Backends, p Port) ([]netip.AddrPort, error) {
	s = s.WithDefaults()
	target := p.TargetPort
	if target == 0 {
		target = p.Port
	}
	names := make([]string, len(b.Backends))
	addrs := make([]netip.AddrPort, len(b.Backends))
	for i, be := range b.Backends {
		addrs[i] = netip.AddrPortFrom(be.IP, target)
		names[i] = addrs[i].String()
	}
	idx, err := Maglev(names, s.TableSize)
	if err != nil {
		return nil, fmt.Errorf("service %q port %d/%s: %w", s.Key(), p.Port, p.Protocol, err)
	}
	if idx == nil {
		return nil, nil
	}
	out := make([]netip.AddrPort, len(idx))
	for i, x := range idx {
		out[i] = addrs[x]
	}
	return out, nil
}
