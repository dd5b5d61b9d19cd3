package qos

import (
	"fmt"
	"strconv"
	"strings"

	"k8s.io/apimachinery/pkg/api/resource"
)

// Keys of the values that set an attachment's QoS, in every source.
const (
	// AnnotationClass is the pod annotation with the class of all the
	// pod's VPC attachments ("high", "normal", "low").
	AnnotationClass = "genie.cni.io/qos"
	// AnnotationEgress and AnnotationIngress are Kubernetes' bandwidth
	// annotations (a quantity in bits per second, e.g. "10M").
	AnnotationEgress  = "kubernetes.io/egress-bandwidth"
	AnnotationIngress = "kubernetes.io/ingress-bandwidth"
	// ArgClass is the cni-args key (NPWG element) with the class of one
	// attachment.
	ArgClass = "qos"
	// EnvArgClass is the CNI_ARGS key with the class of the pod's VPC
	// attachments outside Kubernetes.
	EnvArgClass = "GENIE_QOS"
	// EnvArgEgress is the CNI_ARGS key with the egress limit (a quantity in
	// bits/s, like kubernetes.io/egress-bandwidth) outside Kubernetes.
	EnvArgEgress = "GENIE_EGRESS_BANDWIDTH"
)

// MinRate is the smallest rate limit accepted (bits/s): below it HTB's
// token bucket cannot hold one 64 KiB GSO packet in a sane burst.
const MinRate = 100_000

// Spec is the QoS of one attachment, as the plugin sends it to the agent.
type Spec struct {
	// Class is the traffic class (None: unmarked).
	Class Class `json:"class,omitempty"`
	// EgressRate limits what the pod sends through the uplink, in bits/s
	// (0: no limit).
	EgressRate uint64 `json:"egressRate,omitempty"`
	// IngressRate limits what reaches the pod, in bits/s (0: no limit).
	IngressRate uint64 `json:"ingressRate,omitempty"`
}

// IsZero reports whether s asks for nothing.
func (s Spec) IsZero() bool { return s == Spec{} }

// Validate checks the limits.
func (s Spec) Validate() error {
	if s.Class > Low {
		return fmt.Errorf("qos class %d out of range", uint8(s.Class))
	}
	for _, r := range []struct {
		key string
		v   uint64
	}{{"egressRate", s.EgressRate}, {"ingressRate", s.IngressRate}} {
		if r.v != 0 && r.v < MinRate {
			return fmt.Errorf("%s %d bit/s is below the minimum %d", r.key, r.v, MinRate)
		}
	}
	return nil
}

// ParseRate parses a rate in bits/s: a Kubernetes quantity ("10M", "1G",
// "500k", "2500000"), as the bandwidth annotations carry it.
func ParseRate(s string) (uint64, error) {
	q, err := resource.ParseQuantity(strings.TrimSpace(s))
	if err != nil {
		return 0, fmt.Errorf("rate %q: %w", s, err)
	}
	v, ok := q.AsInt64()
	if !ok || v <= 0 {
		return 0, fmt.Errorf("rate %q is not a positive whole number of bits per second", s)
	}
	return uint64(v), nil
}

// Sources are the values one attachment's QoS comes from, highest
// precedence first within each field: the attachment's own (cni-args,
// bandwidth), then the pod's (annotations, CNI_ARGS), then the VPC's
// default class.
type Sources struct {
	// ArgClass is cni-args["qos"] of the attachment (nil: absent).
	ArgClass any
	// BandwidthEgress and BandwidthIngress are the attachment's NPWG
	// "bandwidth" egressRate/ingressRate (or runtimeConfig.bandwidth for the
	// pod's first network), bits/s; 0: absent.
	BandwidthEgress, BandwidthIngress int64
	// PodClass is the genie.cni.io/qos annotation or CNI_ARGS GENIE_QOS;
	// PodClassKey names which, for errors (default the annotation).
	PodClass, PodClassKey string
	// PodEgress and PodIngress are the kubernetes.io/*-bandwidth
	// annotations (PodEgress: or CNI_ARGS GENIE_EGRESS_BANDWIDTH, named by
	// PodEgressKey).
	PodEgress, PodIngress, PodEgressKey string
	// VPCDefault is the VPC's default class.
	VPCDefault Class
}

// Resolve merges the sources into a Spec. An error names the key at fault.
func (src Sources) Resolve() (Spec, error) {
	var s Spec
	switch v := src.ArgClass.(type) {
	case nil:
	case string:
		c, err := ParseClass(v)
		if err != nil {
			return Spec{}, fmt.Errorf("cni-args %q: %w", ArgClass, err)
		}
		s.Class = c
	default:
		return Spec{}, fmt.Errorf("cni-args %q: %v is not a string", ArgClass, v)
	}
	if s.Class == None {
		c, err := ParseClass(src.PodClass)
		if err != nil {
			key := src.PodClassKey
			if key == "" {
				key = AnnotationClass
			}
			return Spec{}, fmt.Errorf("%s: %w", key, err)
		}
		s.Class = c
	}
	if s.Class == None {
		s.Class = src.VPCDefault
	}
	var err error
	egressKey := src.PodEgressKey
	if egressKey == "" {
		egressKey = AnnotationEgress
	}
	if s.EgressRate, err = rate("bandwidth egressRate", src.BandwidthEgress, egressKey, src.PodEgress); err != nil {
		return Spec{}, err
	}
	if s.IngressRate, err = rate("bandwidth ingressRate", src.BandwidthIngress, AnnotationIngress, src.PodIngress); err != nil {
		return Spec{}, err
	}
	if err := s.Validate(); err != nil {
		return Spec{}, err
	}
	return s, nil
}

func rate(key string, v int64, annKey, ann string) (uint64, error) {
	switch {
	case v < 0:
		return 0, fmt.Errorf("%s: negative rate %d", key, v)
	case v > 0:
		if uint64(v) < MinRate {
			return 0, fmt.Errorf("%s: %d bit/s is below the minimum %d", key, v, MinRate)
		}
		return uint64(v), nil
	case ann == "":
		return 0, nil
	}
	r, err := ParseRate(ann)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", annKey, err)
	}
	if r < MinRate {
		return 0, fmt.Errorf("%s: %s is below the minimum %d bit/s", annKey, strconv.Quote(ann), MinRate)
	}
	return r, nil
}
