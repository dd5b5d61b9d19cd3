package kubestore_test

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/cni-genie/cni-genie/pkg/store"
	"github.com/cni-genie/cni-genie/pkg/store/kubestore"
	"github.com/cni-genie/cni-genie/pkg/testutil/kubeapi"
	"github.com/cni-genie/cni-genie/pkg/vpc"
)

// With the API server stopped, calls fail at the caller's deadline with
// store.ErrUnavailable naming the API server and the operation, never
// with a rule's sentinel; connecting to it fails the same way.
func TestStoreDownIsUnavailable(t *testing.T) {
	srv := kubeapi.New(t, kubeapi.Options{})
	ctx := t.Context()
	if err := srv.InstallProjectCRDs(ctx, kubestore.CRDFiles...); err != nil {
		t.Fatal(err)
	}
	s := open(t, srv.RESTConfig(), "")
	if _, err := s.CreateVPC(ctx, vpc.VPC{Name: "blue", CIDR: netip.MustParsePrefix("10.1.0.0/16")}); err != nil {
		t.Fatal(err)
	}
	srv.Stop()
	calls := map[string]func(context.Context) error{
		"get vpc": func(ctx context.Context) error { _, err := s.GetVPC(ctx, "blue"); return err },
		"put endpoint": func(ctx context.Context) error {
			_, err := s.PutEndpoint(ctx, vpc.Endpoint{VPC: "blue", Subnet: "web", ID: "c1/eth1", IP: netip.MustParseAddr("10.1.0.5"), Node: "n1"})
			return err
		},
		"claim block": func(ctx context.Context) error { _, err := s.ClaimBlock(ctx, "blue", "web", "n1"); return err },
	}
	for name, call := range calls {
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		start := time.Now()
		err := call(cctx)
		took := time.Since(start)
		cancel()
		if !errors.Is(err, store.ErrUnavailable) || errors.Is(err, store.ErrNotFound) || errors.Is(err, store.ErrConflict) {
			t.Errorf("%s: err = %v, want store.ErrUnavailable only", name, err)
		}
		if !strings.Contains(err.Error(), "kubernetes API server "+srv.URL) || !strings.Contains(err.Error(), name) {
			t.Errorf("%s: error does not name the store and the step: %v", name, err)
		}
		if took > 3*time.Second {
			t.Errorf("%s took %v past a 1 s deadline", name, took)
		}
	}
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if _, err := kubestore.NewForConfig(cctx, srv.RESTConfig(), kubestore.Options{}); !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("connect to a stopped API server: %v, want store.ErrUnavailable", err)
	}
}
