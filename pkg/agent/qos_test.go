package agent

import (
	"errors"
	"strings"
	"testing"

	"github.com/cni-genie/cni-genie/pkg/qos"
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
		{&qos.Spec{Class: qos.Low, IngressRate: 10_000_000}, "ingressRate: ingress rate limits toward a pod are not supported"},
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
