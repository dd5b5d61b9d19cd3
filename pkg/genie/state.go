package genie

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"

	"github.com/cni-genie/cni-genie/pkg/qos"
	"time"
)

// recordFormat versions the on-disk record layout.
const recordFormat = 1

// Record is the attachment plan of one genie attachment (container ID plus
// CNI_IFNAME), written before any delegate runs. DEL, CHECK and GC work from
// it alone: no pod object, NAD or conf file is needed after ADD.
type Record struct {
	Format      int    `json:"format"`
	ContainerID string `json:"containerID"`
	IfName      string `json:"ifName"`
	Netns       string `json:"netns,omitempty"`
	CNIVersion  string `json:"cniVersion"`
	// Args are the CNI_ARGS pairs passed to the delegates.
	Args         [][2]string `json:"args,omitempty"`
	PodNamespace string      `json:"podNamespace,omitempty"`
	PodName      string      `json:"podName,omitempty"`
	PodUID       string      `json:"podUID,omitempty"`
	// Networks in attach order; DEL walks them backwards.
	Networks []RecordNetwork `json:"networks"`
	// Created is when ADD recorded the plan. GC spares a record younger
	// than gcGrace whatever the runtime's valid list says: the list may
	// have been computed before this ADD began (see CmdGC).
	Created time.Time `json:"created,omitzero"`
	// Result is the merged 1.x result ADD returned (absent until ADD
	// succeeded); CHECK compares the runtime's prevResult with it.
	Result json.RawMessage `json:"result,omitempty"`
}

// RecordNetwork is one planned attachment.
type RecordNetwork struct {
	// Name is the CNI network name; Selection is how the pod asked for it
	// (e.g. "ns/net-a"), reported in network-status.
	Name      string `json:"name"`
	Selection string `json:"selection"`
	IfName    string `json:"ifName"`
	Default   bool   `json:"default,omitempty"`
	// Config is the exact conflist given to libcni (nil for VPC networks).
	Config json.RawMessage `json:"config,omitempty"`
	// CapabilityArgs is the runtimeConfig given to the delegate.
	CapabilityArgs map[string]any `json:"capabilityArgs,omitempty"`
	// VPC network fields.
	VPC          string   `json:"vpc,omitempty"`
	Subnet       string   `json:"subnet,omitempty"`
	IPs          []string `json:"ips,omitempty"`
	MAC          string   `json:"mac,omitempty"`
	DefaultRoute []string `json:"defaultRoute,omitempty"`
	// QoS is the VPC attachment's class and limits (nil: none).
	QoS *qos.Spec `json:"qos,omitempty"`
}

// IsVPC reports whether the network is served by the node agent.
func (n *RecordNetwork) IsVPC() bool { return n.VPC != "" }

// store keeps one JSON file per attachment under dir.
type store struct{ dir string }

// path maps (containerID, ifName) to a file name. A container ID never holds
// '+', so the first '+' separates the two and the mapping is one-to-one.
func (s store) path(containerID, ifName string) string {
	return filepath.Join(s.dir, containerID+"+"+ifName+".json")
}

// save writes r atomically (temp file, rename): a reader sees the old record
// or the new one, never a torn one, and a crash of genie or of the runtime
// leaves a complete record in the page cache. There is deliberately no
// fsync: it cost 15-30 ms per ADD on a busy disk (p99 far worse), and it
// would only guard against power loss, after which every pod netns is gone
// anyway and the delegates' own state (host-local writes without fsync) is
// no more durable than the record.
func (s store) save(r *Record) error {
	r.Format = recordFormat
	data, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("encoding record: %w", err)
	}
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return fmt.Errorf("creating state dir: %w", err)
	}
	f, err := os.CreateTemp(s.dir, ".tmp-*")
	if err != nil {
		return fmt.Errorf("creating record: %w", err)
	}
	tmp := f.Name()
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, s.path(r.ContainerID, r.IfName))
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("writing record: %w", err)
	}
	return nil
}

// load returns the record, or nil when there is none.
func (s store) load(containerID, ifName string) (*Record, error) {
	data, err := os.ReadFile(s.path(containerID, ifName))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading record: %w", err)
	}
	r := &Record{}
	if err := json.Unmarshal(data, r); err != nil {
		return nil, fmt.Errorf("decoding record %s: %w", s.path(containerID, ifName), err)
	}
	return r, nil
}

// remove deletes the record; a missing one is not an error.
func (s store) remove(containerID, ifName string) error {
	err := os.Remove(s.path(containerID, ifName))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("removing record: %w", err)
	}
	return nil
}

// list returns every readable record, sorted by file name. Unreadable files
// are reported in the error but do not hide the others.
func (s store) list() ([]*Record, error) {
	entries, err := os.ReadDir(s.dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("listing state dir: %w", err)
	}
	names := make([]string, 0, len(entries))
	for _, e := range entries {
		if !e.IsDir() && strings.HasSuffix(e.Name(), ".json") && !strings.HasPrefix(e.Name(), ".") {
			names = append(names, e.Name())
		}
	}
	sort.Strings(names)
	var out []*Record
	var errs []error
	for _, n := range names {
		data, err := os.ReadFile(filepath.Join(s.dir, n))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		r := &Record{}
		if err := json.Unmarshal(data, r); err != nil {
			errs = append(errs, fmt.Errorf("decoding record %s: %w", n, err))
			continue
		}
		out = append(out, r)
	}
	return out, errors.Join(errs...)
}

// lock takes the state dir's lock: shared for ADD, DEL and CHECK (which
// touch only their own record), exclusive for GC (which reads every record
// and deletes stale ones), so GC never sees an ADD or DEL half done. The
// returned func releases it; the kernel releases it if genie dies.
func (s store) lock(exclusive bool) (func(), error) {
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating state dir: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(s.dir, ".lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("opening state lock: %w", err)
	}
	how := syscall.LOCK_SH
	if exclusive {
		how = syscall.LOCK_EX
	}
	for {
		err = syscall.Flock(int(f.Fd()), how)
		if !errors.Is(err, syscall.EINTR) {
			break
		}
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("locking state dir: %w", err)
	}
	return func() { f.Close() }, nil
}
