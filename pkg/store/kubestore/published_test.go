package kubestore_test

import (
	"net"
	"testing"
	"time"

	"github.com/cni-genie/cni-genie/pkg/store/storetest"
	"github.com/cni-genie/cni-genie/pkg/vpc"
)

// TestPublishedRoundTrip: the agents' propagation-latency metric needs the
// publication time back with its nanoseconds, through the CRD's schema
// (a field missing from it would be pruned silently).
func TestPublishedRoundTrip(t *testing.T) {
	srv := server(t)
	s := open(t, srv.RESTConfig(), scope())
	storetest.MustVPC(t, s, "blue", "10.9.0.0/16")
	storetest.MustSubnet(t, s, "blue", "web", "10.9.0.0/24")
	storetest.RegisterNodes(t, s, "n1")
	blk, err := s.ClaimBlock(t.Context(), "blue", "web", "n1")
	if err != nil {
		t.Fatal(err)
	}
	pub := time.Date(2026, 11, 27, 9, 30, 0, 123456789, time.UTC)
	e := vpc.Endpoint{VPC: "blue", Subnet: "web", ID: "c1/eth0", IP: blk.CIDR.Addr().Next().Next(),
		MAC: net.HardwareAddr{2, 0, 0, 0, 0, 9}, Node: "n1", Published: pub}
	if _, err := s.PutEndpoint(t.Context(), e); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetEndpoint(t.Context(), "blue", "c1/eth0")
	if err != nil {
		t.Fatal(err)
	}
	if !got.Published.Equal(pub) {
		t.Fatalf("published = %v, want %v", got.Published, pub)
	}
}
