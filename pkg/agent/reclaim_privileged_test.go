package agent_test

import (
	"context"
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/cni-genie/cni-genie/pkg/store"
	"github.com/cni-genie/cni-genie/pkg/vpc"
)

// TestPrivilegedDeadNodeReclaimed: with --node-reclaim-after 3s, the
// agents heartbeat; once node-b's agent is killed, node-a's agent (the
// live node with the smallest name) reclaims node-b's endpoint, block and
// node object within a few seconds, and another node can then take the
// address; node-a keeps everything of its own.
func TestPrivilegedDeadNodeReclaimed(t *testing.T) {
	c := newCluster(t, 2, "--node-reclaim-after", "3s")
	ctx := context.Background()
	if _, err := c.st.CreateVPC(ctx, vpc.VPC{Name: "blue", CIDR: netip.MustParsePrefix("10.1.0.0/16")}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.st.CreateSubnet(ctx, vpc.Subnet{VPC: "blue", Name: "web", CIDR: netip.MustParsePrefix("10.1.0.0/24"), BlockPrefixLen: 28}); err != nil {
		t.Fatal(err)
	}
	na, nb := c.nodes[0], c.nodes[1]
	pa := na.mustAttach(t, "a", "blue", "web")
	pb := nb.mustAttach(t, "b", "blue", "web")
	held := func(node string) (eps, blocks int) {
		all, _, err := c.st.ListEndpoints(ctx, "blue")
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range all {
			if e.Node == node {
				eps++
			}
		}
		bs, err := c.st.ListBlocks(ctx, "blue", "web")
		if err != nil {
			t.Fatal(err)
		}
		for _, b := range bs {
			if b.Node == node {
				blocks++
			}
		}
		return eps, blocks
	}
	if e, b := held(nb.name); e != 1 || b != 1 {
		t.Fatalf("%s before: %d endpoints, %d blocks", nb.name, e, b)
	}
	// Both agents heartbeat (every second with a 3 s reclaim time): after
	// 5 s both nodes are still there.
	time.Sleep(5 * time.Second)
	for _, n := range c.nodes {
		if _, err := c.st.GetNode(ctx, n.name); err != nil {
			t.Fatalf("live node %s lost its node object: %v", n.name, err)
		}
		if e, b := held(n.name); e != 1 || b != 1 {
			t.Fatalf("live node %s: %d endpoints, %d blocks", n.name, e, b)
		}
	}
	nb.killAgent()
	deadline := time.Now().Add(20 * time.Second)
	for {
		e, b := held(nb.name)
		_, err := c.st.GetNode(ctx, nb.name)
		if e == 0 && b == 0 && errors.Is(err, store.ErrNotFound) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("dead %s after 20 s: %d endpoints, %d blocks, node object: %v\n%s", nb.name, e, b, err, na.logs())
		}
		time.Sleep(200 * time.Millisecond)
	}
	if e, b := held(na.name); e != 1 || b != 1 {
		t.Fatalf("live %s after the reclaim: %d endpoints, %d blocks", na.name, e, b)
	}
	if _, err := c.st.GetNode(ctx, na.name); err != nil {
		t.Fatalf("live %s after the reclaim: %v", na.name, err)
	}
	// The dead node's address is free for another node.
	again := na.mustAttach(t, "c", "blue", "web", pb.ip.String())
	if again.ip != pb.ip {
		t.Fatalf("got %s, want the reclaimed %s", again.ip, pb.ip)
	}
	_ = pa
}
