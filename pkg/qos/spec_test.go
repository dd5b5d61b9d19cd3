package qos

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/cni-genie/cni-genie/pkg/vpc"
)

func TestParseClass(t *testing.T) {
	for in, want := range map[string]Class{"": None, "high": High, "Normal": Normal, " low ": Low} {
		got, err := ParseClass(in)
		if err != nil || got != want {
			t.Errorf("ParseClass(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"gold", "1", "hi"} {
		if _, err := ParseClass(in); err == nil || !strings.Contains(err.Error(), "want high, normal or low") {
			t.Errorf("ParseClass(%q) error %v", in, err)
		}
	}
}

func TestWeightsAddUp(t *testing.T) {
	sum := 0
	for i, c := range Classes {
		sum += c.Weight()
		if c.Prio() != uint32(i) {
			t.Errorf("%s prio %d, want %d", c, c.Prio(), i)
		}
		if c.Minor() != uint16(i+1)*0x10 {
			t.Errorf("%s minor %#x", c, c.Minor())
		}
	}
	if sum != 100 {
		t.Errorf("weights add up to %d, want 100", sum)
	}
}

func TestSpecJSON(t *testing.T) {
	s := Spec{Class: High, EgressRate: 10_000_000}
	b, err := json.Marshal(s)
	if err != nil || string(b) != `{"class":"high","egressRate":10000000}` {
		t.Fatalf("marshal: %s %v", b, err)
	}
	var back Spec
	if err := json.Unmarshal(b, &back); err != nil || back != s {
		t.Fatalf("unmarshal: %+v %v", back, err)
	}
	if err := json.Unmarshal([]byte(`{"class":"gold"}`), &back); err == nil {
		t.Fatal("class gold accepted")
	}
	if b, _ := json.Marshal(Spec{}); string(b) != `{}` {
		t.Errorf("zero spec marshals to %s", b)
	}
}

func TestResolve(t *testing.T) {
	for _, tc := range []struct {
		name string
		src  Sources
		want Spec
		err  string
	}{
		{name: "nothing", want: Spec{}},
		{name: "vpc default", src: Sources{VPCDefault: Low}, want: Spec{Class: Low}},
		{name: "pod annotation over vpc default", src: Sources{PodClass: "high", VPCDefault: Low}, want: Spec{Class: High}},
		{name: "cni-args over pod annotation", src: Sources{ArgClass: "low", PodClass: "high"}, want: Spec{Class: Low}},
		{name: "k8s annotations", src: Sources{PodEgress: "10M", PodIngress: "1G"}, want: Spec{EgressRate: 10_000_000, IngressRate: 1_000_000_000}},
		{name: "bandwidth key over annotation", src: Sources{BandwidthEgress: 2_000_000, PodEgress: "10M"}, want: Spec{EgressRate: 2_000_000}},
		{name: "bad cni-args class", src: Sources{ArgClass: "gold"}, err: `cni-args "qos": unknown qos class "gold"`},
		{name: "cni-args class not a string", src: Sources{ArgClass: 3.0}, err: `cni-args "qos": 3 is not a string`},
		{name: "bad annotation class", src: Sources{PodClass: "urgent"}, err: "genie.cni.io/qos: unknown qos class"},
		{name: "bad egress annotation", src: Sources{PodEgress: "fast"}, err: "kubernetes.io/egress-bandwidth: rate \"fast\""},
		{name: "fractional rate", src: Sources{PodIngress: "0.5"}, err: "kubernetes.io/ingress-bandwidth: rate \"0.5\" is not a positive whole number"},
		{name: "tiny rate", src: Sources{PodEgress: "1k"}, err: "kubernetes.io/egress-bandwidth: \"1k\" is below the minimum"},
		{name: "negative bandwidth", src: Sources{BandwidthIngress: -1}, err: "bandwidth ingressRate: negative rate"},
		{name: "tiny bandwidth", src: Sources{BandwidthEgress: 10}, err: "bandwidth egressRate: 10 bit/s is below the minimum"},
		{name: "bandwidth ingress with burst", src: Sources{BandwidthIngress: 5_000_000, BandwidthIngressBurst: 4_000_000, PodIngress: "1G"},
			want: Spec{IngressRate: 5_000_000, IngressBurst: 4_000_000}},
		{name: "ingress burst without its rate", src: Sources{BandwidthIngressBurst: 4_000_000, PodIngress: "1G"},
			err: "bandwidth ingressBurst: 4000000 bit without the same element's ingressRate"},
		{name: "negative ingress burst", src: Sources{BandwidthIngress: 5_000_000, BandwidthIngressBurst: -1}, err: "bandwidth ingressBurst: negative burst"},
		{name: "huge ingress burst", src: Sources{BandwidthIngress: 5_000_000, BandwidthIngressBurst: 1 << 40}, err: "ingressBurst 1099511627776 bit is above the maximum"},
		{name: "ingress from CNI_ARGS", src: Sources{PodIngress: "20M", PodIngressKey: "CNI_ARGS GENIE_INGRESS_BANDWIDTH"}, want: Spec{IngressRate: 20_000_000}},
		{name: "bad ingress in CNI_ARGS", src: Sources{PodIngress: "20 M", PodIngressKey: "CNI_ARGS GENIE_INGRESS_BANDWIDTH"},
			err: "CNI_ARGS GENIE_INGRESS_BANDWIDTH: rate \"20 M\""},
		{name: "tiny ingress annotation", src: Sources{PodIngress: "50k"}, err: "kubernetes.io/ingress-bandwidth: \"50k\" is below the minimum"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.src.Resolve()
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("Resolve = %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
}

func TestWithDefault(t *testing.T) {
	if got := WithDefault(nil, None); got != nil {
		t.Errorf("nil, none: %+v", got)
	}
	if got := WithDefault(nil, Low); got == nil || *got != (Spec{Class: Low}) {
		t.Errorf("nil, low: %+v", got)
	}
	in := &Spec{IngressRate: 1e6}
	if got := WithDefault(in, High); *got != (Spec{Class: High, IngressRate: 1e6}) || in.Class != None {
		t.Errorf("limits only, high: %+v (input changed: %+v)", got, in)
	}
	if got := WithDefault(&Spec{Class: Normal}, High); got.Class != Normal {
		t.Errorf("the pod's class must win: %+v", got)
	}
}

func TestIngressBurst(t *testing.T) {
	for _, tc := range []struct{ rate, burst, want uint64 }{
		{1_000_000, 0, MinIngressBurst},            // 250 ms at 1 Mbit/s = 31 KB: the floor
		{1_000_000_000, 0, 31_250_000},             // 250 ms at 1 Gbit/s
		{1_000_000_000, 8_000_000, 1_000_000},      // asked: 1 MB
		{1_000_000_000, 8 * 1024, MinIngressBurst}, // asked below the floor
	} {
		if got := IngressBurst(tc.rate, tc.burst); got != tc.want {
			t.Errorf("IngressBurst(%d, %d) = %d, want %d", tc.rate, tc.burst, got, tc.want)
		}
	}
}

func TestWireRate(t *testing.T) {
	// A 1436-byte pod packet is a 1500-byte frame on the uplink's qdisc.
	if got := WireRate(50_000_000, 1436); got != 50_000_000*1500/1436 {
		t.Errorf("WireRate = %d", got)
	}
	if got := WireRate(50_000_000, 0); got != 50_000_000 {
		t.Errorf("WireRate without an mtu = %d", got)
	}
}

// The VPC object's class names are this package's.
func TestVPCClassNames(t *testing.T) {
	var names []string
	for _, c := range Classes {
		names = append(names, c.String())
	}
	if strings.Join(names, ",") != strings.Join(vpc.QoSClasses, ",") {
		t.Errorf("vpc.QoSClasses %v, want %v", vpc.QoSClasses, names)
	}
}
