package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/cni-genie/cni-genie/pkg/qos"
	"github.com/cni-genie/cni-genie/pkg/vpc"
)

// attachment is the agent's local record of one VPC attachment. It is
// written to the state dir before anything is created for the attachment
// and removed last on detach, so that a crashed or restarted agent can
// finish or undo any attachment it started.
type attachment struct {
	ContainerID  string `json:"containerID"`
	IfName       string `json:"ifName"`
	Netns        string `json:"netns"`
	PodNamespace string `json:"podNamespace,omitempty"`
	PodName      string `json:"podName,omitempty"`
	VPC          string `json:"vpc"`
	Subnet       string `json:"subnet"`
	VNI          uint32 `json:"vni"`
	// HostIf is the host-side veth name (hostVethName).
	HostIf string `json:"hostIf"`
	// HostIndex is the host veth's ifindex (0 until created).
	HostIndex int `json:"hostIndex,omitempty"`
	// IP is zero until the address is allocated.
	IP     netip.Addr `json:"ip,omitzero"`
	Prefix int        `json:"prefix,omitempty"`
	MAC    string     `json:"mac,omitempty"`
	// DefaultRoute records that the pod got a default route via the
	// gateway.
	DefaultRoute bool `json:"defaultRoute,omitempty"`
	// QoS is the class, QoSMinor the attachment's own HTB class on the
	// uplink (an egress limit of QoSEgressRate bits/s), QoSIngressRate
	// and QoSIngressBurst (bits; 0: the default) its ingress limit, see
	// qos.go.
	QoS             qos.Class `json:"qos,omitempty"`
	QoSMinor        uint16    `json:"qosMinor,omitempty"`
	QoSEgressRate   uint64    `json:"qosEgressRate,omitempty"`
	QoSIngressRate  uint64    `json:"qosIngressRate,omitempty"`
	QoSIngressBurst uint64    `json:"qosIngressBurst,omitempty"`
	// Labels are the pod's labels from the ADD request (services).
	Labels labelSet `json:"labels,omitempty"`
	// Complete is set once the attachment is fully programmed.
	Complete bool `json:"complete"`
}

// key identifies the attachment in maps and file names.
func (a *attachment) key() string { return a.HostIf }

func (a *attachment) hwAddr() net.HardwareAddr {
	mac, _ := net.ParseMAC(a.MAC)
	return mac
}

// owner is the IPAM owner string of the attachment.
func (a *attachment) owner() string { return vpc.EndpointID(a.ContainerID, a.IfName) }

// endpoint returns the store object of the attachment.
func (a *attachment) endpoint(node string) vpc.Endpoint {
	return vpc.Endpoint{
		VPC: a.VPC, Subnet: a.Subnet, VNI: a.VNI, ID: a.owner(),
		PodNamespace: a.PodNamespace, PodName: a.PodName, Interface: a.IfName,
		IP: a.IP, MAC: a.hwAddr(), Node: node, Labels: a.Labels.labels(), QoS: a.qosRecord(),
	}
}

// stateStore persists attachments as one JSON file each.
type stateStore struct{ dir string }

func newStateStore(dir string) (*stateStore, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating state dir %s: %w", dir, err)
	}
	return &stateStore{dir: dir}, nil
}

func (s *stateStore) path(key string) string { return filepath.Join(s.dir, key+".json") }

// save writes a atomically (temp file and rename).
func (s *stateStore) save(a *attachment) error {
	data, err := json.Marshal(a)
	if err != nil {
		return fmt.Errorf("encoding attachment %s: %w", a.key(), err)
	}
	tmp := s.path(a.key()) + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return fmt.Errorf("writing attachment %s: %w", a.key(), err)
	}
	if err := os.Rename(tmp, s.path(a.key())); err != nil {
		return fmt.Errorf("saving attachment %s: %w", a.key(), err)
	}
	return nil
}

func (s *stateStore) remove(key string) error {
	if err := os.Remove(s.path(key)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("removing attachment %s: %w", key, err)
	}
	return nil
}

// load returns every saved attachment, sorted by key. Unreadable files are
// reported, not fatal.
func (s *stateStore) load() ([]*attachment, []error) {
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, []error{fmt.Errorf("reading state dir %s: %w", s.dir, err)}
	}
	var out []*attachment
	var errs []error
	for _, e := range entries {
		if e.IsDir() || !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		data, err := os.ReadFile(filepath.Join(s.dir, e.Name()))
		if err != nil {
			errs = append(errs, fmt.Errorf("reading %s: %w", e.Name(), err))
			continue
		}
		a := &attachment{}
		if err := json.Unmarshal(data, a); err != nil || a.HostIf+".json" != e.Name() {
			errs = append(errs, fmt.Errorf("decoding %s: invalid attachment record", e.Name()))
			continue
		}
		out = append(out, a)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].key() < out[j].key() })
	return out, errs
}
