package etcdstore_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/cni-genie/cni-genie/pkg/store"
	"github.com/cni-genie/cni-genie/pkg/store/etcdstore"
	"github.com/cni-genie/cni-genie/pkg/store/storetest"
	"github.com/cni-genie/cni-genie/pkg/vpc"
)

// The store's contract is tested by the conformance suite
// (conformance_test.go); this file holds what is etcd's own: the exact
// watch events (a move is one put, a delete carries the last stored
// object), compaction and the embedded server.

var ctx = context.Background()

// In etcd an endpoint moving to another IP is one put, and a delete event
// carries the endpoint's last IP: the watch of a VPC sees exactly these
// events, in order, none of another VPC, and nothing more.
func TestWatchEndpointsExactEvents(t *testing.T) {
	s := srv.NewStore(t, "")
	storetest.MustVPC(t, s, "blue", "10.1.0.0/16")
	storetest.MustVPC(t, s, "red", "10.1.0.0/16")
	storetest.MustSubnet(t, s, "blue", "web", "10.1.0.0/24")
	storetest.MustSubnet(t, s, "red", "web", "10.1.0.0/24")
	storetest.RegisterNodes(t, s, "n1", "n2")
	if _, err := s.ClaimBlock(ctx, "blue", "web", "n1"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ClaimBlock(ctx, "red", "web", "n2"); err != nil {
		t.Fatal(err)
	}
	_, rev0, err := s.ListEndpoints(ctx, "blue")
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	events := s.WatchEndpoints(wctx, "blue", rev0)

	ep := vpc.Endpoint{VPC: "blue", Subnet: "web", ID: "c1/eth1", IP: netip.MustParseAddr("10.1.0.2"),
		MAC: net.HardwareAddr{0x02, 0xaa, 0, 0, 0, 1}, Node: "n1"}
	moved := ep
	moved.IP = netip.MustParseAddr("10.1.0.3")
	for _, e := range []vpc.Endpoint{
		ep,
		{VPC: "red", Subnet: "web", ID: "c9/eth1", IP: ep.IP, Node: "n2"},
		moved,
		{VPC: "blue", Subnet: "web", ID: "c2/eth1", IP: ep.IP, Node: "n1"},
	} {
		if _, err := s.PutEndpoint(ctx, e); err != nil {
			t.Fatalf("put %s: %v", e.Key(), err)
		}
	}
	for _, id := range []string{"c1/eth1", "c2/eth1", "c1/eth1"} {
		if err := s.DeleteEndpoint(ctx, "blue", id); err != nil {
			t.Fatalf("delete %s: %v", id, err)
		}
	}
	want := []string{
		"put c1/eth1 10.1.0.2", "put c1/eth1 10.1.0.3", "put c2/eth1 10.1.0.2",
		"delete c1/eth1 10.1.0.3", "delete c2/eth1 10.1.0.2",
	}
	wantEvents(t, events, want, func(ev store.EndpointEvent) (string, error) {
		return fmt.Sprintf("%s %s %s", ev.Type, ev.Endpoint.ID, ev.Endpoint.IP), ev.Err
	})
	cancel()
	for ev := range events {
		t.Fatalf("event after cancel: %+v", ev)
	}
}

// In etcd a node's delete event carries the last stored node (its MAC
// here), and each change is exactly one event.
func TestWatchNodesExactEvents(t *testing.T) {
	s := srv.NewStore(t, "")
	_, rev, err := s.ListNodes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	events := s.WatchNodes(wctx, rev)
	storetest.RegisterNodes(t, s, "n1", "n2.example")
	if err := s.DeleteNode(ctx, "n1"); err != nil {
		t.Fatal(err)
	}
	want := []string{"put n1 02:00:00:00:00:01", "put n2.example 02:00:00:00:00:02", "delete n1 02:00:00:00:00:01"}
	wantEvents(t, events, want, func(ev store.NodeEvent) (string, error) {
		return fmt.Sprintf("%s %s %s", ev.Type, ev.Node.Name, ev.Node.UnderlayMAC), ev.Err
	})
}

// wantEvents reads len(want) events, failing on an error event or when
// one takes longer than storetest.EventTimeout, and checks that they read
// as want, in order.
func wantEvents[E any](t *testing.T, events <-chan E, want []string, show func(E) (string, error)) {
	t.Helper()
	var seen []string
	for len(seen) < len(want) {
		select {
		case ev := <-events:
			line, err := show(ev)
			if err != nil {
				t.Fatal(err)
			}
			seen = append(seen, line)
		case <-time.After(storetest.EventTimeout):
			t.Fatalf("watch: got %v, want %v", seen, want)
		}
	}
	if !slices.Equal(seen, want) {
		t.Fatalf("watch = %v, want %v", seen, want)
	}
}

// A watch from a compacted revision reports ErrCompacted (own server: the
// compaction would disturb the other tests).
func TestWatchCompacted(t *testing.T) {
	e, s := ownServer(t, etcdstore.EmbeddedConfig{})
	storetest.RegisterNodes(t, s, "n1", "n2", "n3")
	_, rev, _ := s.ListNodes(ctx)
	cli, err := clientv3.New(clientv3.Config{Endpoints: e.Endpoints()})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	if _, err := cli.Compact(ctx, rev); err != nil {
		t.Fatal(err)
	}
	ev, ok := <-s.WatchNodes(ctx, 1)
	if !ok || ev.Type != store.EventError || !errors.Is(ev.Err, store.ErrCompacted) {
		t.Fatalf("event = %+v, %v; want ErrCompacted", ev, ok)
	}
}

// ownServer starts an embedded etcd of the test's own (in a new short
// temp dir unless cfg names one) and connects a client; both are closed
// at test end.
func ownServer(t *testing.T, cfg etcdstore.EmbeddedConfig) (*etcdstore.Embedded, *etcdstore.Store) {
	t.Helper()
	if cfg.DataDir == "" {
		cfg.DataDir = shortTempDir(t)
	}
	e, err := etcdstore.StartEmbedded(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	s, err := etcdstore.New(ctx, e.Endpoints(), etcdstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return e, s
}

func shortTempDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "genie-etcd-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func TestEmbeddedTCP(t *testing.T) {
	e, s := ownServer(t, etcdstore.EmbeddedConfig{ClientURL: "http://127.0.0.1:0"})
	if eps := e.Endpoints(); len(eps) != 1 || !strings.HasPrefix(eps[0], "http://127.0.0.1:") || strings.HasSuffix(eps[0], ":0") {
		t.Fatalf("endpoints = %v", eps)
	}
	if v, err := s.CreateVPC(ctx, vpc.VPC{Name: "tcp", CIDR: netip.MustParsePrefix("10.0.0.0/8")}); err != nil || v.VNI != 1 {
		t.Fatalf("create = %+v, %v", v, err)
	}
}

func TestEmbeddedRestartKeepsData(t *testing.T) {
	dir := shortTempDir(t)
	e, err := etcdstore.StartEmbedded(ctx, etcdstore.EmbeddedConfig{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	s, err := etcdstore.New(ctx, e.Endpoints(), etcdstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	storetest.MustVPC(t, s, "keep", "10.0.0.0/8")
	s.Close()
	e.Close()
	e, err = etcdstore.StartEmbedded(ctx, etcdstore.EmbeddedConfig{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	s, err = etcdstore.New(ctx, e.Endpoints(), etcdstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if v, err := s.GetVPC(ctx, "keep"); err != nil || v.VNI != 1 {
		t.Fatalf("after restart = %+v, %v", v, err)
	}
}

func TestNewUnreachable(t *testing.T) {
	_, err := etcdstore.New(ctx, []string{"unix:///nonexistent/genie-etcd.sock"}, etcdstore.Options{DialTimeout: 500 * time.Millisecond})
	if err == nil || !strings.Contains(err.Error(), "connect to etcd unix:///nonexistent/genie-etcd.sock") {
		t.Fatalf("err = %v", err)
	}
}

func TestStartEmbeddedBadConfig(t *testing.T) {
	for _, tc := range []struct {
		cfg  etcdstore.EmbeddedConfig
		want string
	}{
		{etcdstore.EmbeddedConfig{}, "data dir is empty"},
		{etcdstore.EmbeddedConfig{DataDir: shortTempDir(t), ClientURL: "ftp://x:1"}, "scheme must be unix or http"},
		{etcdstore.EmbeddedConfig{DataDir: shortTempDir(t), ClientURL: "unix://rel/x.sock"}, "must be absolute"},
		{etcdstore.EmbeddedConfig{DataDir: shortTempDir(t), ClientURL: "unix:///" + strings.Repeat("d", 120)}, "longer than 107"},
	} {
		if _, err := etcdstore.StartEmbedded(ctx, tc.cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: err = %v, want %q", tc.cfg, err, tc.want)
		}
	}
}
