package qos

import (
	"fmt"
	"strconv"
	"strings"
	"time"

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
	// EnvArgEgress and EnvArgIngress are the CNI_ARGS keys with the egress
	// and ingress limits (a quantity in bits/s, like the kubernetes.io
	// annotations) outside Kubernetes.
	EnvArgEgress  = "GENIE_EGRESS_BANDWIDTH"
	EnvArgIngress = "GENIE_INGRESS_BANDWIDTH"
)

// MinRate is the smallest rate limit accepted (bits/s): below it HTB's
// token bucket cannot hold one 64 KiB GSO packet in a sane burst.
const MinRate = 100_000

// MaxIngressBurst is the largest ingress burst accepted, in bits (1 GiB).
const MaxIngressBurst = 8 << 30

// Spec is the QoS of one attachment, as the plugin sends it to the agent.
type Spec struct {
	// Class is the traffic class (None: unmarked).
	Class Class `json:"class,omitempty"`
	// EgressRate limits what the pod sends through the uplink, in bits/s
	// (0: no limit).
	EgressRate uint64 `json:"egressRate,omitempty"`
	// IngressRate limits what reaches the pod, in bits/s (0: no limit).
	IngressRate uint64 `json:"ingressRate,omitempty"`
	// IngressBurst is the ingress limit's burst in bits (0: IngressBurst's
	// default for the rate).
	IngressBurst uint64 `json:"ingressBurst,omitempty"`
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
	if s.IngressBurst != 0 && s.IngressRate == 0 {
		return fmt.Errorf("ingressBurst %d bit without an ingressRate", s.IngressBurst)
	}
	if s.IngressBurst > MaxIngressBurst {
		return fmt.Errorf("ingressBurst %d bit is above the maximum %d", s.IngressBurst, uint64(MaxIngressBurst))
	}
	return nil
}

// WithDefault is s with the VPC's default class when s has none: per-pod
// settings (any source) override the VPC's. nil s with a default class is
// a spec of that class.
func WithDefault(s *Spec, vpcDefault Class) *Spec {
	if vpcDefault == None || (s != nil && s.Class != None) {
		return s
	}
	var out Spec
	if s != nil {
		out = *s
	}
	out.Class = vpcDefault
	return &out
}

// The policer's burst (IngressBurst): never below two GSO packets (a 64
// KiB super-packet must fit), and by default DefaultIngressBurstTime worth
// of the rate. A policer drops instead of queueing, and TCP's answer to
// the loss of a window's tail is a retransmission timeout, at least 200 ms
// on Linux: a bucket that cannot hold that long at the rate loses the time
// for good. Measured in the sandbox (TCP, 8 s, BENCHMARKS.md §8): at 20
// Mbit/s a burst of 20 ms gave 5.5 Mbit/s, 100 ms 10.5, 200 ms 19.8; at 200
// Mbit/s 50 ms gave 56 and 200 ms 192-197. The cost is the burst itself: a
// pod idle for a while may receive 250 ms worth at once.
const (
	MinIngressBurst         = 128 << 10 // bytes
	DefaultIngressBurstTime = 250 * time.Millisecond
)

// IngressBurst is the burst in bytes of an ingress limit of rate bits/s
// with a requested burst of burst bits (0: the default).
func IngressBurst(rate, burst uint64) uint64 {
	b := burst / 8
	if b == 0 {
		b = rate / 8 * uint64(DefaultIngressBurstTime) / uint64(time.Second)
	}
	return max(b, MinIngressBurst)
}

// WireOverhead is what the uplink's qdisc counts on top of a pod's IPv4
// packet, per packet (per segment of a GSO packet): the Geneve
// encapsulation (50 bytes) and the outer Ethernet header (14).
const WireOverhead = 50 + 14

// WireRate is the rate to give HTB for an egress limit of rate bits/s of
// the pod's L3 bytes, for a pod with MTU mtu: HTB counts the encapsulated
// frame, and can only add to a packet's length (its overhead option is
// unsigned), so the rate is scaled instead. Exact for full-size packets
// (bulk traffic, where a limit matters); a stream of small packets gets
// less than rate of its own bytes.
func WireRate(rate uint64, mtu int) uint64 {
	if mtu <= 0 {
		return rate
	}
	return rate * uint64(mtu+WireOverhead) / uint64(mtu)
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
	// pod's first network), bits/s; 0: absent. BandwidthIngressBurst is its
	// ingressBurst, bits (egressBurst is not used: HTB's burst is sized
	// for the uplink).
	BandwidthEgress, BandwidthIngress, BandwidthIngressBurst int64
	// PodClass is the genie.cni.io/qos annotation or CNI_ARGS GENIE_QOS;
	// PodClassKey names which, for errors (default the annotation).
	PodClass, PodClassKey string
	// PodEgress and PodIngress are the kubernetes.io/*-bandwidth
	// annotations, or CNI_ARGS GENIE_EGRESS_BANDWIDTH and
	// GENIE_INGRESS_BANDWIDTH, named by PodEgressKey and PodIngressKey
	// (default the annotations).
	PodEgress, PodIngress, PodEgressKey, PodIngressKey string
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
	ingressKey := src.PodIngressKey
	if ingressKey == "" {
		ingressKey = AnnotationIngress
	}
	if s.IngressRate, err = rate("bandwidth ingressRate", src.BandwidthIngress, ingressKey, src.PodIngress); err != nil {
		return Spec{}, err
	}
	switch b := src.BandwidthIngressBurst; {
	case b < 0:
		return Spec{}, fmt.Errorf("bandwidth ingressBurst: negative burst %d", b)
	case b > 0 && src.BandwidthIngress > 0:
		s.IngressBurst = uint64(b)
	case b > 0:
		return Spec{}, fmt.Errorf("bandwidth ingressBurst: %d bit without the same element's ingressRate", b)
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
