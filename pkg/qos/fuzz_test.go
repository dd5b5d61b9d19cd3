package qos

import (
	"encoding/json"
	"testing"
)

// FuzzResolve: any mix of source values either resolves to a valid Spec
// or fails; a resolved Spec survives the JSON trip to the agent.
func FuzzResolve(f *testing.F) {
	f.Add("high", "", "10M", "", int64(0), int64(0))
	f.Add("", "low", "", "1G", int64(5_000_000), int64(-1))
	f.Add("gold", "normal", "0.5", "1e3", int64(1), int64(0))
	f.Fuzz(func(t *testing.T, arg, pod, egress, ingress string, bwEg, bwIn int64) {
		src := Sources{ArgClass: arg, PodClass: pod, PodEgress: egress, PodIngress: ingress,
			BandwidthEgress: bwEg, BandwidthIngress: bwIn}
		if arg == "" {
			src.ArgClass = nil
		}
		s, err := src.Resolve()
		if err != nil {
			return
		}
		if verr := s.Validate(); verr != nil {
			t.Fatalf("resolved %+v fails validation: %v", s, verr)
		}
		b, err := json.Marshal(s)
		if err != nil {
			t.Fatalf("marshal %+v: %v", s, err)
		}
		var back Spec
		if err := json.Unmarshal(b, &back); err != nil || back != s {
			t.Fatalf("round trip %s: %+v, %v", b, back, err)
		}
	})
}
