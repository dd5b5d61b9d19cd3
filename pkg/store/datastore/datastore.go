package datastore

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/cni-genie/cni-genie/pkg/store"
	"github.com/cni-genie/cni-genie/pkg/store/etcdstore"
	"github.com/cni-genie/cni-genie/pkg/store/kubestore"
)

// Backend names accepted by Config.Backend and the --datastore flags.
const (
	// Etcd stores the state in etcd (Config.EtcdEndpoints).
	Etcd = "etcd"
	// Kubernetes stores the state in genie.cni.io custom resources through
	// the API server (Config.Kubeconfig).
	Kubernetes = "kubernetes"
)

// Backends lists the accepted backend names, the default first.
func Backends() []string { return []string{Etcd, Kubernetes} }

// Config selects and configures a backend.
type Config struct {
	// Backend is Etcd or Kubernetes; empty means Etcd.
	Backend string
	// EtcdEndpoints are the etcd endpoints of the Etcd backend
	// ("unix:///path" reaches an etcd on a unix socket).
	EtcdEndpoints []string
	// Kubeconfig is the kubeconfig file of the Kubernetes backend; empty
	// means the in-cluster service account.
	Kubeconfig string
	// KubeScope is kubestore.Options.Scope: a prefix that lets several
	// independent stores share one cluster (empty for a real deployment).
	KubeScope string
	// DirectoryShards is the endpoint directory's shard count the store
	// lays records out by (zero: directory.DefaultShards); see
	// store.DirectorySource.
	DirectoryShards int
	// Logger receives the backend client's logs (etcd only); nil discards
	// them below warn, as etcdstore does.
	Logger *slog.Logger
}

// Validate reports a configuration that cannot be opened.
func (c Config) Validate() error {
	switch c.backend() {
	case Etcd:
		if len(c.EtcdEndpoints) == 0 {
			return fmt.Errorf("datastore etcd: no store endpoint")
		}
	case Kubernetes:
	default:
		return fmt.Errorf("datastore %q: unknown, want one of %s", c.Backend, strings.Join(Backends(), ", "))
	}
	return nil
}

func (c Config) backend() string {
	if c.Backend == "" {
		return Etcd
	}
	return c.Backend
}

// Describe names the backend and where it is, for logs and errors:
// "etcd [http://127.0.0.1:2379]", "kubernetes (kubeconfig /etc/genie/kubeconfig)".
func (c Config) Describe() string {
	switch c.backend() {
	case Etcd:
		return fmt.Sprintf("etcd %v", c.EtcdEndpoints)
	case Kubernetes:
		if c.Kubeconfig == "" {
			return "kubernetes (in-cluster)"
		}
		return fmt.Sprintf("kubernetes (kubeconfig %s)", c.Kubeconfig)
	}
	return c.Backend
}

// Open validates c and connects to the backend. Close the store when done.
func Open(ctx context.Context, c Config) (store.Store, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	switch c.backend() {
	case Kubernetes:
		st, err := kubestore.New(ctx, c.Kubeconfig, kubestore.Options{Scope: c.KubeScope, DirectoryShards: c.DirectoryShards})
		if err != nil {
			return nil, fmt.Errorf("open datastore %s: %w", c.Describe(), err)
		}
		return st, nil
	default:
		st, err := etcdstore.New(ctx, c.EtcdEndpoints, etcdstore.Options{Logger: c.Logger, DirectoryShards: c.DirectoryShards})
		if err != nil {
			return nil, fmt.Errorf("open datastore %s: %w", c.Describe(), err)
		}
		return st, nil
	}
}

// ParseBackend checks a --datastore value.
func ParseBackend(s string) (string, error) {
	for _, b := range Backends() {
		if s == b {
			return s, nil
		}
	}
	return "", fmt.Errorf("datastore %q: unknown, want one of %s", s, strings.Join(Backends(), ", "))
}

// SplitEndpoints splits a comma-separated endpoint list, dropping blanks.
func SplitEndpoints(s string) []string {
	var out []string
	for _, e := range strings.Split(s, ",") {
		if e = strings.TrimSpace(e); e != "" {
			out = append(out, e)
		}
	}
	return out
}

// DefaultKubeconfig is $KUBECONFIG (its first file if it is a list), the
// CLI's default for --kubeconfig.
func DefaultKubeconfig() string {
	v := os.Getenv("KUBECONFIG")
	if i := strings.IndexByte(v, os.PathListSeparator); i >= 0 {
		v = v[:i]
	}
	return v
}

// The Kubernetes backend watches a node's VPCs through one filtered stream.
var _ store.VPCWatcher = (*kubestore.Store)(nil)
