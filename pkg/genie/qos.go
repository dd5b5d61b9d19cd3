package genie

import (
	"encoding/json"

	"github.com/cni-genie/cni-genie/pkg/qos"
)

// vpcQoS resolves the QoS of VPC attachment i (plan entry p) from every
// source (see package qos): the element's cni-args "qos" and "bandwidth",
// runtimeConfig.bandwidth for the pod's first network (kubelet's
// kubernetes.io/*-bandwidth), the pod's annotations, and CNI_ARGS
// GENIE_QOS, GENIE_EGRESS_BANDWIDTH and GENIE_INGRESS_BANDWIDTH. nil when
// nothing asks for QoS. The error names the key. The VPC's default class
// is applied by the agent, which reads the VPC.
func (inv *invocation) vpcQoS(i int, p *planned) (*qos.Spec, error) {
	var src qos.Sources
	if p.CNIArgs != nil {
		src.ArgClass = (*p.CNIArgs)[qos.ArgClass]
	}
	if b := p.BandwidthRequest; b != nil {
		src.BandwidthEgress, src.BandwidthIngress = int64(b.EgressRate), int64(b.IngressRate)
		src.BandwidthIngressBurst = int64(b.IngressBurst)
	} else if raw, ok := inv.conf.RuntimeConfig["bandwidth"]; ok && i == 0 {
		var b struct {
			IngressRate  int64 `json:"ingressRate"`
			IngressBurst int64 `json:"ingressBurst"`
			EgressRate   int64 `json:"egressRate"`
		}
		data, _ := json.Marshal(raw)
		if err := json.Unmarshal(data, &b); err != nil {
			return nil, &keyError{"runtimeConfig bandwidth", err}
		}
		src.BandwidthEgress, src.BandwidthIngress, src.BandwidthIngressBurst = b.EgressRate, b.IngressRate, b.IngressBurst
	}
	if inv.podObj != nil {
		a := inv.podObj.Annotations
		src.PodClass, src.PodEgress, src.PodIngress = a[qos.AnnotationClass], a[qos.AnnotationEgress], a[qos.AnnotationIngress]
	} else {
		src.PodClass, src.PodClassKey = string(inv.pod.GENIE_QOS), "CNI_ARGS "+qos.EnvArgClass
		src.PodEgress, src.PodEgressKey = string(inv.pod.GENIE_EGRESS_BANDWIDTH), "CNI_ARGS "+qos.EnvArgEgress
		src.PodIngress, src.PodIngressKey = string(inv.pod.GENIE_INGRESS_BANDWIDTH), "CNI_ARGS "+qos.EnvArgIngress
	}
	s, err := src.Resolve()
	if err != nil {
		return nil, err
	}
	if s.IsZero() {
		return nil, nil
	}
	return &s, nil
}

type keyError struct {
	key string
	err error
}

func (e *keyError) Error() string { return e.key + ": " + e.err.Error() }
func (e *keyError) Unwrap() error { return e.err }
