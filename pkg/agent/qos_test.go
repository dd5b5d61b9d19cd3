package agent

import (
	"errors"
	"strings"
	"testing"

	"github.com/cni-genie/cni-genie/pkg/datapath"
	"github.com/cni-genie/cni-genie/pkg/qos"
	"github.com/cni-genie/cni-genie/pkg/vpc"
	"github.com/containernetworking/cni/pkg/types"
)

// TestCheckQoS: what the agent refuses before creating anything, with code 7.
func TestCheckQoS(t *testing.T) {
	a := &Agent{} // no QoS tree on the uplink
	for _, tc := range []struct {
		spec *qos.Spec
		want string // "" accepted
	}{
		{nil, ""},
		{&qos.Spec{Class: qos.High}, ""},
		// Ingress limits are policed in BPF: no tree needed.
		{&qos.Spec{Class: qos.Low, IngressRate: 10_000_000}, ""},
		{&qos.Spec{IngressRate: 10_000_000, IngressBurst: 1 << 20}, ""},
		{&qos.Spec{IngressBurst: 1 << 20}, "ingressBurst 1048576 bit without an ingressRate"},
		{&qos.Spec{IngressRate: 50_000}, "ingressRate 50000 bit/s is below the minimum"},
		{&qos.Spec{EgressRate: 10_000_000}, "egressRate: qos is not configured on this node's uplink"},
		{&qos.Spec{EgressRate: 10}, "egressRate 10 bit/s is below the minimum"},
		{&qos.Spec{Class: 7}, "qos class 7 out of range"},
	} {
		err := a.checkQoS(tc.spec)
		if tc.want == "" {
			if err != nil {
				t.Errorf("%+v: %v", tc.spec, err)
			}
			continue
		}
		var se *stepError
		if !errors.As(err, &se) || se.code != types.ErrInvalidNetworkConfig || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: error %v, want code 7 and %q", tc.spec, err, tc.want)
		}
	}
}

// TestResolveQoS: the VPC's default class applies when the request
// sets none, a request's class wins, and the limits are recorded with the
// data plane's view of them (the policer's burst defaulted).
func TestResolveQoS(t *testing.T) {
	a := &Agent{}
	blue := vpc.VPC{Name: "blue", QoSClass: "low"}
	for _, tc := range []struct {
		name string
		spec *qos.Spec
		v    vpc.VPC
		want qos.Class
	}{
		{"no request, vpc default", nil, blue, qos.Low},
		{"limit only, vpc default", &qos.Spec{IngressRate: 10_000_000}, blue, qos.Low},
		{"request wins", &qos.Spec{Class: qos.High}, blue, qos.High},
		{"no default", nil, vpc.VPC{Name: "red"}, qos.None},
	} {
		at := &attachment{}
		if err := a.resolveQoS(at, tc.spec, tc.v); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if at.QoS != tc.want {
			t.Errorf("%s: class %v, want %v", tc.name, at.QoS, tc.want)
		}
	}
	at := &attachment{}
	if err := a.resolveQoS(at, &qos.Spec{IngressRate: 1_000_000_000}, blue); err != nil {
		t.Fatal(err)
	}
	ep := at.qosEndpoint(datapath.LocalEndpoint{})
	if ep.Ingress != (datapath.IngressLimit{Rate: 1_000_000_000, Burst: qos.IngressBurst(1_000_000_000, 0)}) || ep.QoS != datapath.QoSLow {
		t.Errorf("data plane view %+v", ep)
	}
}
