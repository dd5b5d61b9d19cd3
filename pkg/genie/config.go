package genie

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/cni-genie/cni-genie/pkg/agentapi"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"
)

// Defaults of genie's own configuration keys.
const (
	DefaultConfDir  = "/etc/cni/net.d"
	DefaultBinDir   = "/opt/cni/bin"
	DefaultStateDir = "/var/lib/cni/genie"
	DefaultLogLevel = "warn"
	// DefaultAttachParallelism is how many attachments of one ADD run at
	// once when attachParallelism is not set.
	DefaultAttachParallelism = 4
	// PluginType is genie's own "type"; confs of this type in the conf dir
	// are never chosen as delegates.
	PluginType = "genie"
	// VPCType is the "type" of a network served by the node agent's overlay
	// instead of a delegate binary.
	VPCType = "genie-vpc"
)

// NetConf is genie's configuration: the standard CNI keys plus genie's own.
// Every key is documented in docs/genie.md.
type NetConf struct {
	types.PluginConf

	// ConfDir holds the delegate network configurations (.conf, .conflist, .json).
	ConfDir string `json:"confDir,omitempty"`
	// BinDir is where delegate plugins are found; default CNI_PATH, else /opt/cni/bin.
	BinDir string `json:"binDir,omitempty"`
	// DefaultNetworks names the networks a pod gets without a selection
	// (NPWG additions are attached after them). The first one is the pod's
	// default network. Empty: the first valid conf in ConfDir.
	DefaultNetworks []string `json:"defaultNetworks,omitempty"`
	// Kubeconfig is the kubeconfig file genie reads pods and NADs with.
	// Empty: Kubernetes is not used (selection from CNI_ARGS only).
	Kubeconfig string `json:"kubeconfig,omitempty"`
	// StateDir holds the attachment records (and libcni's result cache).
	StateDir string `json:"stateDir,omitempty"`
	// LogFile receives genie's log; empty means stderr (never stdout).
	LogFile string `json:"logFile,omitempty"`
	// LogLevel is debug, info, warn or error.
	LogLevel string `json:"logLevel,omitempty"`
	// AgentSocket is the node agent's socket, used for VPC networks.
	AgentSocket string `json:"agentSocket,omitempty"`
	// AttachParallelism bounds how many attachments of one ADD run at
	// once after the pod's first network (see attachWaves); 1 attaches
	// every network in order, one at a time. 0 means
	// DefaultAttachParallelism.
	AttachParallelism int `json:"attachParallelism,omitempty"`

	// RuntimeConfig carries the runtime's capability arguments
	// (portMappings, bandwidth, ...); they go to the default network only.
	RuntimeConfig map[string]any `json:"runtimeConfig,omitempty"`
}

// ParseConfig decodes genie's stdin configuration and applies defaults.
// cniPath is CNI_PATH as given by the runtime (may be empty).
func ParseConfig(data []byte, cniPath string) (*NetConf, error) {
	conf := &NetConf{}
	if err := json.Unmarshal(data, conf); err != nil {
		return nil, fmt.Errorf("parsing genie config: %w", err)
	}
	if conf.CNIVersion == "" {
		conf.CNIVersion = "0.1.0"
	}
	if _, _, _, err := version.ParseVersion(conf.CNIVersion); err != nil {
		return nil, fmt.Errorf("genie config: cniVersion %q: %w", conf.CNIVersion, err)
	}
	if conf.ConfDir == "" {
		conf.ConfDir = DefaultConfDir
	}
	if conf.BinDir == "" {
		conf.BinDir = cniPath
	}
	if conf.BinDir == "" {
		conf.BinDir = DefaultBinDir
	}
	if conf.StateDir == "" {
		conf.StateDir = DefaultStateDir
	}
	if conf.AgentSocket == "" {
		conf.AgentSocket = agentapi.DefaultSocket
	}
	if conf.LogLevel == "" {
		conf.LogLevel = DefaultLogLevel
	}
	switch {
	case conf.AttachParallelism < 0:
		return nil, fmt.Errorf("genie config: attachParallelism %d: want 1 or more (0: default %d)", conf.AttachParallelism, DefaultAttachParallelism)
	case conf.AttachParallelism == 0:
		conf.AttachParallelism = DefaultAttachParallelism
	}
	if _, err := parseLevel(conf.LogLevel); err != nil {
		return nil, fmt.Errorf("genie config: %w", err)
	}
	for key, p := range map[string]string{"confDir": conf.ConfDir, "stateDir": conf.StateDir, "agentSocket": conf.AgentSocket} {
		if !filepath.IsAbs(p) {
			return nil, fmt.Errorf("genie config: %s %q must be an absolute path", key, p)
		}
	}
	for _, n := range conf.DefaultNetworks {
		if strings.TrimSpace(n) == "" {
			return nil, fmt.Errorf("genie config: defaultNetworks has an empty name")
		}
	}
	return conf, nil
}

// binPaths splits BinDir (a PATH-style list, like CNI_PATH).
func (c *NetConf) binPaths() []string {
	return filepath.SplitList(c.BinDir)
}

func parseLevel(s string) (slog.Level, error) {
	switch strings.ToLower(s) {
	case "debug":
		return slog.LevelDebug, nil
	case "info":
		return slog.LevelInfo, nil
	case "warn", "warning":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	}
	return 0, fmt.Errorf("logLevel %q: want debug, info, warn or error", s)
}

// newLogger returns the configured log; stdout is never used (it carries
// the CNI result). The log file is opened on the first record, so a call
// that logs nothing (the usual ADD or DEL at the default level) does not
// touch it. The returned closer must be called before exit.
func newLogger(c *NetConf) (*slog.Logger, func()) {
	lvl, _ := parseLevel(c.LogLevel)
	var w io.Writer = os.Stderr
	closer := func() {}
	if c.LogFile != "" {
		lf := &lazyFile{path: c.LogFile}
		w, closer = lf, lf.close
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: lvl})), closer
}

// lazyFile appends to path, opened (and its directory created) at the first
// Write; if that fails, records go to stderr instead.
type lazyFile struct {
	path string
	w    io.Writer
	f    *os.File
}

func (l *lazyFile) Write(p []byte) (int, error) {
	if l.w == nil {
		l.w = os.Stderr
		if err := os.MkdirAll(filepath.Dir(l.path), 0o755); err == nil {
			if f, err := os.OpenFile(l.path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644); err == nil {
				l.w, l.f = f, f
			}
		}
	}
	return l.w.Write(p)
}

func (l *lazyFile) close() {
	if l.f != nil {
		l.f.Close()
	}
}
