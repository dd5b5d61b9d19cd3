package install

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"

	"github.com/containernetworking/cni/libcni"

	"github.com/cni-genie/cni-genie/pkg/genie"
)

// Names of the files Install writes.
const (
	// ConfName is genie's conflist in the CNI conf dir; it sorts before
	// the usual 05-/10- names of the primary plugins.
	ConfName = "00-genie.conflist"
	// KubeconfigName is the plugin's kubeconfig, beside ConfName.
	KubeconfigName = "genie.kubeconfig"
	// BinaryName is genie's executable in the CNI bin dir.
	BinaryName = "genie"
)

// ConfCNIVersion is the cniVersion of genie's conflist.
const ConfCNIVersion = "1.1.0"

// ErrNoDefaultNetwork is returned when the conf dir holds no network for
// genie to wrap and none was named.
var ErrNoDefaultNetwork = errors.New("no default network to wrap: the conf dir has no valid conf besides genie's (install the cluster's primary network first, or name one)")

// ConfOptions says what genie's conflist holds.
type ConfOptions struct {
	// ConfDir is the host's CNI conf dir (as seen by the installer).
	ConfDir string
	// ConfName is genie's file name; default ConfName.
	ConfName string
	// DefaultNetwork names the network pods get without a selection.
	// Empty: the first valid conf in ConfDir that is not genie's, in the
	// order the runtime picks confs (file name order).
	DefaultNetwork string
	// Kubeconfig is the path genie reads its kubeconfig from, as seen by
	// the runtime on the host (not the installer's mount); empty: genie
	// runs without Kubernetes.
	Kubeconfig string
	// HostConfDir is ConfDir as seen by the runtime (the "confDir" key);
	// empty: genie's default, /etc/cni/net.d.
	HostConfDir string
	// LogFile and LogLevel go to genie's keys of the same names.
	LogFile, LogLevel string
	// AgentSocket is the node agent's socket (empty: genie's default).
	AgentSocket string
	// AttachParallelism goes to genie's attachParallelism (0: genie's
	// default).
	AttachParallelism int
}

// Wrapped is the network genie's conflist wraps.
type Wrapped struct {
	// Name is the network's name, genie's defaultNetworks[0].
	Name string
	// File is the conf it came from (empty when named explicitly).
	File string
	// Capabilities are the runtime capabilities its plugins declare.
	Capabilities map[string]bool
}

// FindDefault returns the network the runtime would use without genie:
// the first conf in dir, in file name order, that parses and is not genie's
// own. name, if set, is looked up instead.
func FindDefault(dir, name string) (*Wrapped, error) {
	files, err := libcni.ConfFiles(dir, []string{".conf", ".conflist", ".json"})
	if err != nil {
		return nil, fmt.Errorf("read conf dir %s: %w", dir, err)
	}
	sort.Strings(files)
	for _, f := range files {
		list, err := readConf(f)
		if err != nil || isGenieList(list) {
			continue
		}
		if name != "" && list.Name != name {
			continue
		}
		w := &Wrapped{Name: list.Name, File: f, Capabilities: map[string]bool{}}
		for _, p := range list.Plugins {
			for c, on := range p.Network.Capabilities {
				if on {
					w.Capabilities[c] = true
				}
			}
		}
		return w, nil
	}
	if name != "" {
		// A named network may also be a NAD or a VPC network: genie
		// resolves it at call time.
		return &Wrapped{Name: name, Capabilities: map[string]bool{}}, nil
	}
	return nil, fmt.Errorf("%w (looked in %s)", ErrNoDefaultNetwork, dir)
}

// readConf parses a .conf or .conflist into a conflist.
func readConf(path string) (*libcni.NetworkConfigList, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var peek struct {
		Plugins json.RawMessage `json:"plugins"`
	}
	if err := json.Unmarshal(data, &peek); err != nil {
		return nil, err
	}
	if peek.Plugins != nil {
		return libcni.NetworkConfFromBytes(data)
	}
	c, err := libcni.NetworkPluginConfFromBytes(data)
	if err != nil {
		return nil, err
	}
	return libcni.ConfListFromConf(c) //nolint:staticcheck // the supported way to up-convert a .conf
}

func isGenieList(l *libcni.NetworkConfigList) bool {
	for _, p := range l.Plugins {
		if p.Network.Type == genie.PluginType {
			return true
		}
	}
	return false
}

// genieEntry is genie's plugin entry in its conflist.
type genieEntry struct {
	Type            string   `json:"type"`
	DefaultNetworks []string `json:"defaultNetworks"`
	ConfDir         string   `json:"confDir,omitempty"`
	Kubeconfig      string   `json:"kubeconfig,omitempty"`
	LogFile         string   `json:"logFile,omitempty"`
	LogLevel        string   `json:"logLevel,omitempty"`
	AgentSocket     string   `json:"agentSocket,omitempty"`
	// AttachParallelism: 0 is omitted (genie's default).
	AttachParallelism int             `json:"attachParallelism,omitempty"`
	Capabilities      map[string]bool `json:"capabilities,omitempty"`
}

type confList struct {
	CNIVersion string       `json:"cniVersion"`
	Name       string       `json:"name"`
	Plugins    []genieEntry `json:"plugins"`
}

// BuildConflist returns genie's conflist wrapping w.
func BuildConflist(o ConfOptions, w *Wrapped) ([]byte, error) {
	caps := map[string]bool{}
	for c := range w.Capabilities {
		caps[c] = true
	}
	// The pod annotations let genie read the selection even when the API
	// server is slow; the runtime passes them only if declared.
	caps["io.kubernetes.cri.pod-annotations"] = true
	l := confList{CNIVersion: ConfCNIVersion, Name: "genie", Plugins: []genieEntry{{
		Type:              genie.PluginType,
		DefaultNetworks:   []string{w.Name},
		ConfDir:           o.HostConfDir,
		Kubeconfig:        o.Kubeconfig,
		LogFile:           o.LogFile,
		LogLevel:          o.LogLevel,
		AgentSocket:       o.AgentSocket,
		AttachParallelism: o.AttachParallelism,
		Capabilities:      caps,
	}}}
	data, err := json.MarshalIndent(l, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", ConfName, err)
	}
	return append(data, '\n'), nil
}

// WriteConflist writes genie's conflist into o.ConfDir, wrapping the
// current default network (see FindDefault). It refuses, naming the file,
// when another conf sorts before genie's and so would stay the runtime's
// choice. It returns the wrapped network and whether the file changed.
func WriteConflist(o ConfOptions) (*Wrapped, bool, error) {
	name := o.ConfName
	if name == "" {
		name = ConfName
	}
	w, err := FindDefault(o.ConfDir, o.DefaultNetwork)
	if err != nil {
		return nil, false, fmt.Errorf("write %s: %w", name, err)
	}
	if first, err := firstConf(o.ConfDir); err == nil && first != "" && filepath.Base(first) < name {
		return nil, false, fmt.Errorf("write %s: %s sorts before it, so the runtime would keep using that file; rename it or choose a confName that sorts first", name, first)
	}
	data, err := BuildConflist(o, w)
	if err != nil {
		return nil, false, err
	}
	path := filepath.Join(o.ConfDir, name)
	if same, _ := sameContent(path, data); same {
		return w, false, nil
	}
	if err := writeAtomic(path, data, 0o644); err != nil {
		return nil, false, fmt.Errorf("write %s: %w", name, err)
	}
	return w, true, nil
}

// firstConf returns the conf file the runtime would load first, genie's
// own files excluded.
func firstConf(dir string) (string, error) {
	files, err := libcni.ConfFiles(dir, []string{".conf", ".conflist", ".json"})
	if err != nil {
		return "", err
	}
	sort.Strings(files)
	for _, f := range files {
		if l, err := readConf(f); err == nil && !isGenieList(l) {
			return f, nil
		}
	}
	return "", nil
}
