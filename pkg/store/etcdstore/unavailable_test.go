package etcdstore_test

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/cni-genie/cni-genie/pkg/store"
	"github.com/cni-genie/cni-genie/pkg/store/etcdstore"
	"github.com/cni-genie/cni-genie/pkg/vpc"
)

// With the server stopped, every call fails at the caller's deadline with
// store.ErrUnavailable, naming the etcd endpoints and the operation; a
// rule violation is never reported for a store that did not answer.
func TestStoreDownIsUnavailable(t *testing.T) {
	e, err := etcdstore.StartEmbedded(ctx, etcdstore.EmbeddedConfig{DataDir: shortTempDir(t)})
	if err != nil {
		t.Fatal(err)
	}
	s, err := etcdstore.New(ctx, e.Endpoints(), etcdstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	v, err := s.CreateVPC(ctx, vpc.VPC{Name: "blue", CIDR: netip.MustParsePrefix("10.1.0.0/16")})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateSubnet(ctx, vpc.Subnet{VPC: v.Name, Name: "web", CIDR: netip.MustParsePrefix("10.1.0.0/24")}); err != nil {
		t.Fatal(err)
	}
	endpoint := e.Endpoints()[0]
	e.Close()

	calls := map[string]func(context.Context) error{
		"get vpc": func(ctx context.Context) error { _, err := s.GetVPC(ctx, "blue"); return err },
		"claim block": func(ctx context.Context) error {
			_, err := s.ClaimBlock(ctx, "blue", "web", "n1")
			return err
		},
		"put endpoint": func(ctx context.Context) error {
			_, err := s.PutEndpoint(ctx, vpc.Endpoint{VPC: "blue", Subnet: "web", ID: "c1/eth1", IP: netip.MustParseAddr("10.1.0.5"), Node: "n1"})
			return err
		},
		"delete endpoint": func(ctx context.Context) error { return s.DeleteEndpoint(ctx, "blue", "c1/eth1") },
	}
	for name, call := range calls {
		cctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		start := time.Now()
		err := call(cctx)
		took := time.Since(start)
		cancel()
		if !errors.Is(err, store.ErrUnavailable) || !store.Transient(err) {
			t.Errorf("%s: err = %v, want store.ErrUnavailable", name, err)
			continue
		}
		if errors.Is(err, store.ErrConflict) || errors.Is(err, store.ErrNotFound) {
			t.Errorf("%s: a store that did not answer reported a rule: %v", name, err)
		}
		if !strings.Contains(err.Error(), "etcd "+endpoint) || !strings.Contains(err.Error(), name) {
			t.Errorf("%s: error does not name the store and the step: %v", name, err)
		}
		if took > 3*time.Second {
			t.Errorf("%s: took %v past a 500ms deadline", name, took)
		}
	}

	// Connecting to a dead server is ErrUnavailable too.
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if _, err := etcdstore.New(cctx, []string{endpoint}, etcdstore.Options{DialTimeout: time.Second}); !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("New on a stopped server: err = %v, want store.ErrUnavailable", err)
	}
}
