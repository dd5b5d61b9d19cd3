package agent

import (
	"flag"
	"io"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cni-genie/cni-genie/pkg/store/datastore"
)

func TestDatastoreFlags(t *testing.T) {
	parse := func(args ...string) (Config, error) {
		c := DefaultConfig()
		fs := flag.NewFlagSet("genied", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		c.RegisterFlags(fs)
		return c, fs.Parse(args)
	}
	c, err := parse()
	if err != nil {
		t.Fatal(err)
	}
	if sc := c.StoreConfig(); sc.Backend != datastore.Etcd || len(sc.EtcdEndpoints) == 0 {
		t.Fatalf("default store config %+v, want etcd with the default endpoint", sc)
	}
	c, err = parse("--datastore", "kubernetes", "--kubeconfig", "/etc/genie/kubeconfig")
	if err != nil {
		t.Fatal(err)
	}
	if sc := c.StoreConfig(); sc.Backend != datastore.Kubernetes || sc.Kubeconfig != "/etc/genie/kubeconfig" {
		t.Fatalf("store config %+v", sc)
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	if _, err := parse("--datastore", "consul"); err == nil || !strings.Contains(err.Error(), `datastore "consul": unknown`) {
		t.Fatalf("--datastore consul: %v", err)
	}
	c, _ = parse()
	c.Datastore = "zk"
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "config: datastore") {
		t.Fatalf("Validate with datastore zk: %v", err)
	}
	missing := filepath.Join(t.TempDir(), "nope")
	c, _ = parse("--datastore", "kubernetes", "--kubeconfig", missing)
	if _, err := OpenStore(t.Context(), c); err == nil || !strings.Contains(err.Error(), "connecting to store: open datastore kubernetes (kubeconfig "+missing+")") {
		t.Fatalf("OpenStore with a missing kubeconfig: %v", err)
	}
}
