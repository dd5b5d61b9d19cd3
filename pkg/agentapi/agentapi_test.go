package agentapi

import (
	"context"
	"errors"
	"net/http"
	"path/filepath"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
)

type fakeAgent struct{ attached map[string]bool }

func (f *fakeAgent) Attach(_ context.Context, r *AttachRequest) (*current.Result, error) {
	if r.VPC == "missing" {
		return nil, &types.Error{Code: types.ErrInvalidNetworkConfig, Msg: `vpc "missing" not found`}
	}
	if r.VPC == "boom" {
		return nil, errors.New("plain failure")
	}
	f.attached[r.ContainerID+"/"+r.IfName] = true
	return &current.Result{CNIVersion: current.ImplementedSpecVersion,
		Interfaces: []*current.Interface{{Name: r.IfName, Sandbox: r.Netns}}}, nil
}
func (f *fakeAgent) Detach(_ context.Context, r *DetachRequest) error {
	delete(f.attached, r.ContainerID+"/"+r.IfName)
	return nil
}
func (f *fakeAgent) Check(context.Context, *CheckRequest) error { return nil }
func (f *fakeAgent) GC(_ context.Context, r *GCRequest) (*GCResponse, error) {
	return &GCResponse{Freed: r.Valid}, nil
}
func (f *fakeAgent) Status(context.Context) (*StatusResponse, error) {
	return &StatusResponse{Ready: true}, nil
}

// TestRoundTrip drives the real client against the real handler over a unix
// socket; the backend is a test double because the point is the protocol.
func TestRoundTrip(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "agent.sock")
	l, err := Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	agent := &fakeAgent{attached: map[string]bool{}}
	srv := &http.Server{Handler: Handler(agent)}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })

	c := NewClient(sock, 0)
	ctx := context.Background()
	req := &AttachRequest{ContainerID: "c1", IfName: "eth1", Netns: "/run/netns/x", VPC: "blue", Subnet: "web"}
	res, err := c.Attach(ctx, req)
	if err != nil {
		t.Fatalf("attach: %v", err)
	}
	if len(res.Interfaces) != 1 || res.Interfaces[0].Name != "eth1" || !agent.attached["c1/eth1"] {
		t.Fatalf("unexpected result %+v (agent state %v)", res, agent.attached)
	}
	if err := c.Detach(ctx, &DetachRequest{ContainerID: "c1", IfName: "eth1"}); err != nil || agent.attached["c1/eth1"] {
		t.Fatalf("detach: %v, state %v", err, agent.attached)
	}
	st, err := c.Status(ctx)
	if err != nil || !st.Ready {
		t.Fatalf("status: %+v %v", st, err)
	}

	for _, tc := range []struct {
		name string
		req  AttachRequest
		code uint
	}{
		{"typed error keeps its code", AttachRequest{ContainerID: "c", IfName: "e", Netns: "n", VPC: "missing", Subnet: "s"}, types.ErrInvalidNetworkConfig},
		{"plain error becomes internal", AttachRequest{ContainerID: "c", IfName: "e", Netns: "n", VPC: "boom", Subnet: "s"}, types.ErrInternal},
		{"missing field refused by client", AttachRequest{ContainerID: "c", IfName: "e", Netns: "n", VPC: "blue"}, types.ErrInvalidNetworkConfig},
	} {
		_, err := c.Attach(ctx, &tc.req)
		var te *types.Error
		if !errors.As(err, &te) || te.Code != tc.code {
			t.Errorf("%s: got %v, want code %d", tc.name, err, tc.code)
		}
	}
}

func TestAgentDown(t *testing.T) {
	c := NewClient(filepath.Join(t.TempDir(), "none.sock"), 0)
	_, err := c.Status(context.Background())
	var te *types.Error
	if !errors.As(err, &te) || te.Code != types.ErrTryAgainLater {
		t.Fatalf("want try-again-later error, got %v", err)
	}
}
