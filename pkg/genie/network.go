package genie

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"sort"

	"github.com/containernetworking/cni/libcni"
)

// Network is a resolved network: its name and its configuration as a
// conflist (a single .conf is up-converted), or a VPC subnet of the overlay.
type Network struct {
	// Name is the CNI network name (the libcni cache key).
	Name string
	// List is the delegate configuration; nil for a VPC network.
	List *libcni.NetworkConfigList
	// VPC and Subnet are set for a network of type genie-vpc.
	VPC    string
	Subnet string
	// Source says where the configuration came from (file, NAD, shorthand),
	// for error messages.
	Source string
}

// IsVPC reports whether n is served by the node agent.
func (n *Network) IsVPC() bool { return n.VPC != "" }

// firstType is the type of the first plugin (what classic names match).
func (n *Network) firstType() string {
	if n.IsVPC() {
		return VPCType
	}
	if n.List == nil || len(n.List.Plugins) == 0 {
		return ""
	}
	return n.List.Plugins[0].Network.Type
}

// ParseNetwork decodes a network configuration, single plugin or conflist, in
// any supported version. defaultName is used when the configuration has no
// "name" (a NAD's spec.config may omit it; the NAD's name is used then).
func ParseNetwork(data []byte, defaultName, source string) (*Network, error) {
	raw := map[string]any{}
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, fmt.Errorf("%s: parsing network config: %w", source, err)
	}
	if name, _ := raw["name"].(string); name == "" {
		if defaultName == "" {
			return nil, fmt.Errorf("%s: network config has no name", source)
		}
		raw["name"] = defaultName
		var err error
		if data, err = json.Marshal(raw); err != nil {
			return nil, fmt.Errorf("%s: encoding network config: %w", source, err)
		}
	}
	if typ, _ := raw["type"].(string); typ == VPCType {
		vpc, _ := raw["vpc"].(string)
		subnet, _ := raw["subnet"].(string)
		if vpc == "" || subnet == "" {
			return nil, fmt.Errorf("%s: %s network needs \"vpc\" and \"subnet\"", source, VPCType)
		}
		return &Network{Name: raw["name"].(string), VPC: vpc, Subnet: subnet, Source: source}, nil
	}
	var list *libcni.NetworkConfigList
	if _, ok := raw["plugins"]; ok {
		l, err := libcni.NetworkConfFromBytes(data)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", source, err)
		}
		if len(l.Plugins) == 0 {
			return nil, fmt.Errorf("%s: conflist has no plugins", source)
		}
		list = l
	} else {
		pc, err := libcni.NetworkPluginConfFromBytes(data)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", source, err)
		}
		l, err := libcni.ConfListFromConf(pc) //nolint:staticcheck // the supported way to up-convert a .conf
		if err != nil {
			return nil, fmt.Errorf("%s: %w", source, err)
		}
		list = l
	}
	for _, p := range list.Plugins {
		if p.Network.Type == VPCType && len(list.Plugins) > 1 {
			return nil, fmt.Errorf("%s: %s cannot be chained in a conflist", source, VPCType)
		}
	}
	return &Network{Name: list.Name, List: list, Source: source}, nil
}

// isGenie reports whether n is genie's own configuration.
func (n *Network) isGenie() bool {
	if n.List == nil {
		return false
	}
	for _, p := range n.List.Plugins {
		if p.Network.Type == PluginType {
			return true
		}
	}
	return false
}

// confDir is the delegate conf dir, in file-name order. Every file is read
// and its name and plugin types peeked at once; a file is fully parsed
// (libcni) only when a lookup reaches it, so a call that uses one network
// does not pay for parsing all of them (ParseNetwork decodes a .conf four
// times). A file that fails to parse is skipped, with a log line, exactly as
// if it were absent, whenever a lookup reaches it.
type confDir struct {
	dir   string
	files []*confFile
	log   *slog.Logger
}

// confFile is one delegate conf file: its peeked name and first plugin type,
// and, once needed, its parsed network.
type confFile struct {
	path, name, firstType string
	data                  []byte
	parsed                bool
	net                   *Network // nil when invalid
}

// confPeek is the part of a conf (single plugin or conflist) read up front.
type confPeek struct {
	Name    string `json:"name"`
	Type    string `json:"type"`
	Plugins []struct {
		Type string `json:"type"`
	} `json:"plugins"`
}

// loadConfDir reads every .conf, .conflist and .json file in dir, skipping
// genie's own and (with a log line) unreadable or undecodable ones.
func loadConfDir(dir string, log *slog.Logger) (*confDir, error) {
	files, err := libcni.ConfFiles(dir, []string{".conf", ".conflist", ".json"})
	if err != nil {
		return nil, fmt.Errorf("reading conf dir %s: %w", dir, err)
	}
	sort.Strings(files)
	cd := &confDir{dir: dir, log: log}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			log.Warn("skipping unreadable conf", "file", f, "err", err)
			continue
		}
		var p confPeek
		if err := json.Unmarshal(data, &p); err != nil {
			log.Warn("skipping invalid conf", "file", f, "err", err)
			continue
		}
		cf := &confFile{path: f, name: p.Name, firstType: p.Type, data: data}
		if p.Plugins != nil {
			cf.firstType = ""
			if len(p.Plugins) > 0 {
				cf.firstType = p.Plugins[0].Type
			}
		}
		genie := p.Type == PluginType
		for _, pl := range p.Plugins {
			genie = genie || pl.Type == PluginType
		}
		if genie {
			continue
		}
		cd.files = append(cd.files, cf)
	}
	return cd, nil
}

// network parses f on first use; nil when it is not a valid network.
func (cd *confDir) network(f *confFile) *Network {
	if !f.parsed {
		f.parsed = true
		n, err := ParseNetwork(f.data, "", f.path)
		switch {
		case err != nil:
			cd.log.Warn("skipping invalid conf", "file", f.path, "err", err)
		case n.isGenie():
		default:
			f.net = n
		}
	}
	return f.net
}

// all parses and returns every valid network of the dir, in file order.
func (cd *confDir) all() []*Network {
	var out []*Network
	for _, f := range cd.files {
		if n := cd.network(f); n != nil {
			out = append(out, n)
		}
	}
	return out
}

// byName finds the first valid network whose name is name.
func (cd *confDir) byName(name string) *Network {
	for _, f := range cd.files {
		if f.name != name {
			continue
		}
		if n := cd.network(f); n != nil && n.Name == name {
			return n
		}
	}
	return nil
}

// lookup finds the network whose name, failing that whose (first plugin)
// type, is name.
func (cd *confDir) lookup(name string) (*Network, error) {
	if n := cd.byName(name); n != nil {
		return n, nil
	}
	for _, f := range cd.files {
		if f.firstType != name {
			continue
		}
		if n := cd.network(f); n != nil && n.firstType() == name {
			return n, nil
		}
	}
	return nil, fmt.Errorf("no network named %q (by name or type) in conf dir %s", name, cd.dir)
}

// defaults resolves the default networks: the configured ones, else the
// first valid conf in the dir. Never a hard-coded plugin.
func (cd *confDir) defaults(names []string) ([]*Network, error) {
	if len(names) == 0 {
		for _, f := range cd.files {
			if n := cd.network(f); n != nil {
				return []*Network{n}, nil
			}
		}
		return nil, fmt.Errorf("no default network: defaultNetworks is empty and conf dir %s has no valid network config", cd.dir)
	}
	out := make([]*Network, 0, len(names))
	for _, name := range names {
		n, err := cd.lookup(name)
		if err != nil {
			return nil, fmt.Errorf("default network: %w", err)
		}
		out = append(out, n)
	}
	return out, nil
}

// vpcNetwork synthesises the network of the vpc:<vpc>/<subnet> shorthand.
func vpcNetwork(vpc, subnet string) *Network {
	return &Network{Name: "vpc-" + vpc + "-" + subnet, VPC: vpc, Subnet: subnet,
		Source: "vpc:" + vpc + "/" + subnet}
}
