package genie

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/cni-genie/cni-genie/pkg/qos"
	"github.com/containernetworking/cni/pkg/types"
)

// TestVPCQoS: the class and egress rate reach the agent's attach request
// from CNI_ARGS GENIE_QOS and runtimeConfig.bandwidth; bad values fail the
// ADD with code 7 naming the network and the key, before any attach.
func TestVPCQoS(t *testing.T) {
	e := newUnprivEnv(t)
	agent := startAgent(t, e.socket)
	bin := t.TempDir()

	a := e.args("q1", "IgnoreUnknown=1;GENIE_NETWORKS=vpc:blue/web,vpc:red/db;GENIE_QOS=high", bin)
	conf := map[string]any{}
	if err := json.Unmarshal(a.StdinData, &conf); err != nil {
		t.Fatal(err)
	}
	conf["runtimeConfig"] = map[string]any{"bandwidth": map[string]any{"egressRate": 5_000_000, "ingressRate": 7_000_000, "ingressBurst": 2_000_000}}
	a.StdinData, _ = json.Marshal(conf)
	if _, err := Add(a); err != nil {
		t.Fatalf("add: %v", err)
	}
	if len(agent.attachRq) != 2 {
		t.Fatalf("%d attach requests", len(agent.attachRq))
	}
	// The runtime's bandwidth belongs to the first network only.
	if q := agent.attachRq[0].QoS; q == nil || *q != (qos.Spec{Class: qos.High, EgressRate: 5_000_000, IngressRate: 7_000_000, IngressBurst: 2_000_000}) {
		t.Errorf("first attachment qos %+v", q)
	}
	if q := agent.attachRq[1].QoS; q == nil || *q != (qos.Spec{Class: qos.High}) {
		t.Errorf("second attachment qos %+v", q)
	}

	for _, tc := range []struct{ args, want string }{
		{"GENIE_NETWORKS=vpc:blue/web;GENIE_QOS=gold", `CNI_ARGS GENIE_QOS: unknown qos class "gold"`},
		{"GENIE_NETWORKS=vpc:blue/web;GENIE_EGRESS_BANDWIDTH=fast", `CNI_ARGS GENIE_EGRESS_BANDWIDTH: rate "fast"`},
		{"GENIE_NETWORKS=vpc:blue/web;GENIE_INGRESS_BANDWIDTH=-5M", `CNI_ARGS GENIE_INGRESS_BANDWIDTH: rate "-5M" is not a positive whole number`},
		{"GENIE_NETWORKS=vpc:blue/web;GENIE_INGRESS_BANDWIDTH=10k", `CNI_ARGS GENIE_INGRESS_BANDWIDTH: "10k" is below the minimum`},
	} {
		n := len(agent.attachRq)
		_, err := Add(e.args("q2", tc.args, bin))
		var te *types.Error
		if !errors.As(err, &te) || te.Code != types.ErrInvalidNetworkConfig || !strings.Contains(te.Msg, "vpc:blue/web") ||
			!strings.Contains(te.Msg, tc.want) {
			t.Errorf("%s: error %v, want code 7 naming the network, the key and %q", tc.args, err, tc.want)
		}
		t.Logf("error: %v", err)
		if len(agent.attachRq) != n {
			t.Errorf("%s: the agent was asked to attach", tc.args)
		}
	}

	// The ingress limit outside Kubernetes, with the class.
	if _, err := Add(e.args("q4", "GENIE_NETWORKS=vpc:blue/web;GENIE_QOS=low;GENIE_INGRESS_BANDWIDTH=20M", bin)); err != nil {
		t.Fatal(err)
	}
	if q := agent.attachRq[len(agent.attachRq)-1].QoS; q == nil || *q != (qos.Spec{Class: qos.Low, IngressRate: 20_000_000}) {
		t.Errorf("GENIE_INGRESS_BANDWIDTH: qos %+v", q)
	}

	// No QoS asked: no field in the request.
	if _, err := Add(e.args("q3", "GENIE_NETWORKS=vpc:blue/web", bin)); err != nil {
		t.Fatal(err)
	}
	if q := agent.attachRq[len(agent.attachRq)-1].QoS; q != nil {
		t.Errorf("qos %+v without any source", q)
	}
}
