package agent_test

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/cni-genie/cni-genie/pkg/agentapi"
	"github.com/cni-genie/cni-genie/pkg/vpc"
	"github.com/containernetworking/cni/pkg/types"
)

// With the store down, an ADD through the agent's socket fails within 5 s
// with CNI code 11, naming the store and the step, for a VPC the node
// already serves (the endpoint publish fails) and for one it does not
// (resolving the VPC fails); STATUS says not ready. Once the store is
// back, ADD works again and the failed attachment's DEL finishes its
// cleanup. Measured before the fix: 20-51 s, code 999 or 7.
func TestPrivilegedAddFailsFastWithStoreDown(t *testing.T) {
	c := newCluster(t, 1)
	n := c.nodes[0]
	ctx := context.Background()
	for _, v := range []struct{ name, cidr string }{{"blue", "10.1.0.0/16"}, {"red", "10.2.0.0/16"}} {
		if _, err := c.st.CreateVPC(ctx, vpc.VPC{Name: v.name, CIDR: netip.MustParsePrefix(v.cidr)}); err != nil {
			t.Fatal(err)
		}
		if _, err := c.st.CreateSubnet(ctx, vpc.Subnet{VPC: v.name, Name: "web", CIDR: netip.MustParsePrefix(strings.Replace(v.cidr, "/16", "/24", 1))}); err != nil {
			t.Fatal(err)
		}
	}
	n.mustAttach(t, "warm", "blue", "web") // blue is served, its block claimed

	endpoint := c.storeURL[0]
	c.emb.Close()
	var failed []*pod
	for _, tc := range []struct{ pod, vpc, step string }{
		{"p1", "blue", "publish endpoint"},
		{"p2", "red", "resolve vpc"},
	} {
		start := time.Now()
		p, err := n.attach(tc.pod, tc.vpc, "web")
		took := time.Since(start)
		failed = append(failed, p)
		var te *types.Error
		if !errors.As(err, &te) {
			t.Fatalf("attach %s with the store down: err = %v, want a CNI error", tc.pod, err)
		}
		t.Logf("attach %s (vpc %s) with the store down: %v after %v", tc.pod, tc.vpc, te, took)
		if te.Code != types.ErrTryAgainLater {
			t.Errorf("attach %s: code %d, want %d (try again later): %s", tc.pod, te.Code, types.ErrTryAgainLater, te.Msg)
		}
		if !strings.Contains(te.Msg, tc.step) || !strings.Contains(te.Msg, "etcd "+endpoint) {
			t.Errorf("attach %s: message does not name the step %q and the store %q: %s", tc.pod, tc.step, endpoint, te.Msg)
		}
		if took > 5*time.Second {
			t.Errorf("attach %s took %v with the store down, want under 5 s", tc.pod, took)
		}
	}
	st, err := n.client.Status(ctx)
	if err != nil || st.Ready || !strings.Contains(st.Message, "etcd "+endpoint) {
		t.Errorf("status with the store down: %+v, %v; want not ready, naming the store", st, err)
	}

	c.startStore()
	waitStatus(t, n, true, "")
	for _, p := range failed {
		if err := n.client.Detach(ctx, &agentapi.DetachRequest{ContainerID: p.id, IfName: p.ifName, Netns: p.ns.Path()}); err != nil {
			t.Errorf("DEL after a failed ADD, store back: %v", err)
		}
	}
	n.mustAttach(t, "after", "blue", "web")
	eps, _, err := c.st.ListEndpoints(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(eps) != 2 {
		t.Errorf("endpoints after recovery: %+v, want warm and after only", eps)
	}
}
