package agent

import (
	"context"
	"flag"
	"fmt"
	"strings"

	"github.com/cni-genie/cni-genie/pkg/store"
	"github.com/cni-genie/cni-genie/pkg/store/datastore"
)

// registerStoreFlags binds the datastore selection (--datastore,
// --kubeconfig); --store-endpoints is bound in RegisterFlags.
func (c *Config) registerStoreFlags(fs *flag.FlagSet) {
	fs.Func("datastore", "where the control plane's state lives: "+strings.Join(datastore.Backends(), " or ")+
		" (etcd: --store-endpoints; kubernetes: genie.cni.io custom resources through --kubeconfig) (default "+c.datastore()+")",
		func(s string) error {
			b, err := datastore.ParseBackend(s)
			c.Datastore = b
			return err
		})
	fs.StringVar(&c.Kubeconfig, "kubeconfig", c.Kubeconfig,
		"kubeconfig of --datastore kubernetes (empty: the in-cluster service account); a token file it names is re-read when rotated")
}

func (c *Config) datastore() string {
	if c.Datastore == "" {
		return datastore.Etcd
	}
	return c.Datastore
}

// StoreConfig is the datastore configuration c selects.
func (c *Config) StoreConfig() datastore.Config {
	return datastore.Config{
		Backend:       c.datastore(),
		EtcdEndpoints: c.StoreEndpoints,
		Kubeconfig:    c.Kubeconfig,
		Logger:        c.Logger,

		DirectoryShards: c.DirectoryShards,
	}
}

// OpenStore connects to the store cfg selects (etcd or Kubernetes); the
// caller closes it.
func OpenStore(ctx context.Context, cfg Config) (store.Store, error) {
	dc := cfg.StoreConfig()
	if dc.Logger != nil {
		dc.Logger = dc.Logger.With("component", "store")
	}
	st, err := datastore.Open(ctx, dc)
	if err != nil {
		return nil, fmt.Errorf("connecting to store: %w", err)
	}
	return st, nil
}
