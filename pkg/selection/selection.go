package selection

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strings"

	"github.com/containernetworking/cni/pkg/utils"
	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"
)

// Annotation keys read from (and written to) the pod.
const (
	// NetworksAnnotation is the NPWG network selection annotation.
	NetworksAnnotation = "k8s.v1.cni.cncf.io/networks"
	// NetworkStatusAnnotation is the NPWG network status annotation.
	NetworkStatusAnnotation = "k8s.v1.cni.cncf.io/network-status"
	// ClassicAnnotation is the classic CNI-Genie selection annotation.
	ClassicAnnotation = "cni"
	// ArgsKey is the CNI_ARGS key carrying the selection outside Kubernetes.
	ArgsKey = "GENIE_NETWORKS"
	// VPCPrefix starts the shorthand naming a VPC subnet: vpc:<vpc>/<subnet>.
	VPCPrefix = "vpc:"
)

// ErrInvalid is wrapped by every parse and plan error.
var ErrInvalid = errors.New("invalid network selection")

// Element is one requested attachment. The embedded NPWG element carries the
// request as the annotation spells it; VPC and Subnet are set when the name is
// the vpc:<vpc>/<subnet> shorthand.
type Element struct {
	nadv1.NetworkSelectionElement
	// VPC and Subnet name an overlay subnet (shorthand form only).
	VPC    string `json:"-"`
	Subnet string `json:"-"`
}

// IsVPC reports whether e names an overlay subnet by shorthand.
func (e *Element) IsVPC() bool { return e.VPC != "" }

// String returns e in comma-form syntax ([ns/]name[@ifname]).
func (e *Element) String() string {
	var b strings.Builder
	if e.Namespace != "" && !e.IsVPC() {
		b.WriteString(e.Namespace)
		b.WriteByte('/')
	}
	b.WriteString(e.Name)
	if e.InterfaceRequest != "" {
		b.WriteByte('@')
		b.WriteString(e.InterfaceRequest)
	}
	return b.String()
}

// The name syntaxes are checked by hand, not with package-level regexps:
// compiling those ran at every genie start (ADD and DEL alike), selection
// or not.
var (
	// dnsLabel matches a DNS-1123 label (namespaces, VPC and subnet names):
	// ^[a-z0-9]([-a-z0-9]*[a-z0-9])?$.
	dnsLabel = matcher(func(s string) bool {
		for i := 0; i < len(s); i++ {
			c := s[i]
			alnum := c >= 'a' && c <= 'z' || c >= '0' && c <= '9'
			if !alnum && (c != '-' || i == 0 || i == len(s)-1) {
				return false
			}
		}
		return s != ""
	})
	// netName matches a CNI network name (NAD names, DNS-1123 subdomains,
	// are a subset): ^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$.
	netName = matcher(func(s string) bool {
		for i := 0; i < len(s); i++ {
			c := s[i]
			alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
			if !alnum && (i == 0 || c != '_' && c != '.' && c != '-') {
				return false
			}
		}
		return s != ""
	})
)

// matcher is a name syntax check with regexp's MatchString shape.
type matcher func(string) bool

// MatchString reports whether s has the syntax.
func (m matcher) MatchString(s string) bool { return m(s) }

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}

// ParseNetworks parses the NPWG annotation value in either form: a JSON list
// when it starts with '[', else the comma form. An empty value selects
// nothing.
func ParseNetworks(s string) ([]Element, error) {
	t := strings.TrimSpace(s)
	if strings.HasPrefix(t, "[") || strings.HasPrefix(t, "{") {
		return ParseNetworksJSON(t)
	}
	return ParseCommaForm(t, true)
}

// ParseNetworksJSON parses the NPWG JSON list form. Unknown fields are
// refused, so a typo ("interfaces") is an error instead of being ignored.
func ParseNetworksJSON(s string) ([]Element, error) {
	// A method-less copy of the NPWG type, so DisallowUnknownFields applies
	// (the NPWG type's own UnmarshalJSON would bypass it).
	type strictElement nadv1.NetworkSelectionElement
	var raw []strictElement
	dec := json.NewDecoder(strings.NewReader(s))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&raw); err != nil {
		return nil, invalid("parsing networks JSON: %v", err)
	}
	if dec.More() {
		return nil, invalid("parsing networks JSON: trailing data after list")
	}
	out := make([]Element, 0, len(raw))
	for i := range raw {
		e := Element{NetworkSelectionElement: nadv1.NetworkSelectionElement(raw[i])}
		if err := e.normalize(); err != nil {
			return nil, fmt.Errorf("network %d (%q): %w", i+1, raw[i].Name, err)
		}
		out = append(out, e)
	}
	return out, nil
}

// ParseCommaForm parses "a,ns/b@eth5,vpc:blue/web@eth2". allowNamespace
// permits the ns/ prefix (NPWG); the classic and GENIE_NETWORKS forms name
// conf files, which have no namespace.
func ParseCommaForm(s string, allowNamespace bool) ([]Element, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, nil
	}
	parts := strings.Split(s, ",")
	out := make([]Element, 0, len(parts))
	for i, p := range parts {
		p = strings.TrimSpace(p)
		if p == "" {
			return nil, invalid("element %d is empty", i+1)
		}
		var e Element
		name := p
		if at := strings.LastIndex(p, "@"); at >= 0 {
			name, e.InterfaceRequest = p[:at], p[at+1:]
			if e.InterfaceRequest == "" {
				return nil, invalid("element %d (%q): empty interface after @", i+1, p)
			}
		}
		if !strings.HasPrefix(name, VPCPrefix) {
			if slash := strings.Index(name, "/"); slash >= 0 {
				if !allowNamespace {
					return nil, invalid("element %d (%q): namespaces are not allowed in this form", i+1, p)
				}
				e.Namespace, name = name[:slash], name[slash+1:]
				if e.Namespace == "" {
					return nil, invalid("element %d (%q): empty namespace", i+1, p)
				}
			}
		}
		e.Name = name
		if err := e.normalize(); err != nil {
			return nil, fmt.Errorf("element %d (%q): %w", i+1, p, err)
		}
		out = append(out, e)
	}
	return out, nil
}

// ParseClassic parses the classic CNI-Genie annotation cni: "bridge,macvlan@eth3".
func ParseClassic(s string) ([]Element, error) { return ParseCommaForm(s, false) }

// FormatCommaForm renders elements in comma form; ParseCommaForm(FormatCommaForm(x))
// returns the names, namespaces and interfaces of x.
func FormatCommaForm(elems []Element) string {
	parts := make([]string, len(elems))
	for i := range elems {
		parts[i] = elems[i].String()
	}
	return strings.Join(parts, ",")
}

// normalize validates e and splits the VPC shorthand.
func (e *Element) normalize() error {
	if strings.HasPrefix(e.Name, VPCPrefix) {
		rest := strings.TrimPrefix(e.Name, VPCPrefix)
		vpc, subnet, ok := strings.Cut(rest, "/")
		if !ok || !dnsLabel.MatchString(vpc) || !dnsLabel.MatchString(subnet) {
			return invalid("vpc shorthand %q: want vpc:<vpc>/<subnet> with DNS-1123 labels", e.Name)
		}
		if e.Namespace != "" {
			return invalid("vpc shorthand %q takes no namespace", e.Name)
		}
		e.VPC, e.Subnet = vpc, subnet
	} else {
		if e.Name == "" {
			return invalid("empty network name")
		}
		if len(e.Name) > 253 || !netName.MatchString(e.Name) {
			return invalid("network name %q: want letters, digits, '_', '.', '-'", e.Name)
		}
	}
	if e.Namespace != "" && (len(e.Namespace) > 63 || !dnsLabel.MatchString(e.Namespace)) {
		return invalid("namespace %q is not a DNS-1123 label", e.Namespace)
	}
	if e.InterfaceRequest != "" {
		if err := utils.ValidateInterfaceName(e.InterfaceRequest); err != nil {
			return invalid("interface %q: %s", e.InterfaceRequest, err.Msg)
		}
		if strings.ContainsAny(e.InterfaceRequest, "@,") {
			return invalid("interface %q: '@' and ',' are not allowed", e.InterfaceRequest)
		}
	}
	for _, ip := range e.IPRequest {
		if net.ParseIP(ip) == nil {
			if _, _, err := net.ParseCIDR(ip); err != nil {
				return invalid("ips: %q is neither an IP nor a CIDR", ip)
			}
		}
	}
	if e.MacRequest != "" {
		if _, err := net.ParseMAC(e.MacRequest); err != nil {
			return invalid("mac %q: %v", e.MacRequest, err)
		}
	}
	for _, gw := range e.GatewayRequest {
		if gw == nil {
			return invalid("default-route: empty gateway")
		}
	}
	if e.BandwidthRequest != nil {
		b := e.BandwidthRequest
		if b.IngressRate < 0 || b.IngressBurst < 0 || b.EgressRate < 0 || b.EgressBurst < 0 {
			return invalid("bandwidth: negative value")
		}
	}
	return nil
}

// Attachment is one planned attachment: the element, its interface name in
// the pod, and whether it is the pod's default network (the one reported
// with "default": true in network-status).
type Attachment struct {
	Element
	// IfName is the interface the delegate creates in the pod.
	IfName string
	// Default marks the network owning the pod's default route: the one
	// with default-route when requested, else the first.
	Default bool
}

// Plan orders elems (as given: the default network first) and assigns
// interface names. podIfName (CNI_IFNAME) goes to the first element unless
// it asks for a name; unnamed others get net1, net2, ... skipping names taken
// explicitly. Duplicate names and more than one default-route request are
// errors.
func Plan(podIfName string, elems []Element) ([]Attachment, error) {
	if len(elems) == 0 {
		return nil, invalid("no networks selected")
	}
	taken := make(map[string]int, len(elems))
	for i := range elems {
		name := elems[i].InterfaceRequest
		if i == 0 && name == "" {
			name = podIfName
		}
		if name == "" {
			continue
		}
		if j, dup := taken[name]; dup {
			return nil, invalid("interface %q requested by network %d (%s) and network %d (%s)",
				name, j+1, elems[j].Name, i+1, elems[i].Name)
		}
		taken[name] = i
	}
	out := make([]Attachment, len(elems))
	next := 1
	defaultIdx := 0
	routes := 0
	for i := range elems {
		a := Attachment{Element: elems[i], IfName: elems[i].InterfaceRequest}
		if a.IfName == "" {
			if i == 0 {
				a.IfName = podIfName
			} else {
				for {
					cand := fmt.Sprintf("net%d", next)
					next++
					if _, t := taken[cand]; !t {
						a.IfName = cand
						break
					}
				}
			}
		}
		if len(elems[i].GatewayRequest) > 0 {
			routes++
			if routes > 1 {
				return nil, invalid("default-route requested by more than one network (%s and %s)",
					elems[defaultIdx].Name, elems[i].Name)
			}
			defaultIdx = i
		}
		out[i] = a
	}
	out[defaultIdx].Default = true
	return out, nil
}

// Equal reports whether two element lists select the same networks with the
// same requests (used by round-trip checks).
func Equal(a, b []Element) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		ja, _ := json.Marshal(a[i].NetworkSelectionElement)
		jb, _ := json.Marshal(b[i].NetworkSelectionElement)
		if !bytes.Equal(ja, jb) || a[i].VPC != b[i].VPC || a[i].Subnet != b[i].Subnet {
			return false
		}
	}
	return true
}
