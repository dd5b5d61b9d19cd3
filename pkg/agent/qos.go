package agent

import (
	"flag"
	"fmt"

	"github.com/cni-genie/cni-genie/pkg/datapath"
	"github.com/cni-genie/cni-genie/pkg/qos"
	"github.com/cni-genie/cni-genie/pkg/vpc"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/vishvananda/netlink"
)

// registerQoSFlags binds the QoS flags.
func (c *Config) registerQoSFlags(fs *flag.FlagSet) {
	fs.Func("qos-uplink-rate", "rate of the uplink in bits/s (e.g. 10G, 500M): installs the QoS HTB tree on its egress, which enforces the pods' classes and egress limits (default: no tree; classes only mark DSCP)",
		func(s string) error {
			r, err := qos.ParseRate(s)
			if err != nil {
				return err
			}
			if r < qos.MinRate {
				return fmt.Errorf("%d bit/s is below the minimum %d", r, qos.MinRate)
			}
			c.QoSUplinkRate = r
			return nil
		})
}

// startQoS installs the uplink's HTB tree when a rate is configured, or
// removes the one an earlier run installed.
func (a *Agent) startQoS() error {
	link, err := netlink.LinkByIndex(a.uplinkIx)
	if err != nil {
		return fmt.Errorf("qos: uplink %s: %w", a.cfg.Uplink, err)
	}
	if a.cfg.QoSUplinkRate == 0 {
		if err := qos.Remove(link); err != nil {
			return fmt.Errorf("qos: %w", err)
		}
		return nil
	}
	t, err := qos.Install(link, a.cfg.QoSUplinkRate)
	if err != nil {
		return fmt.Errorf("qos: %w", err)
	}
	a.qos = t
	a.m.reg.MustRegister(qos.NewCollector(t))
	return nil
}

// checkQoS validates an attach request's QoS before anything is created.
// Ingress limits need nothing on the node (the data plane polices them);
// egress limits need the uplink's tree.
func (a *Agent) checkQoS(s *qos.Spec) error {
	if s == nil {
		return nil
	}
	if err := s.Validate(); err != nil {
		return fail(types.ErrInvalidNetworkConfig, "qos", err)
	}
	if s.EgressRate != 0 && a.qos == nil {
		return fail(types.ErrInvalidNetworkConfig, "qos", fmt.Errorf("egressRate: %w (genied --qos-uplink-rate)", qos.ErrNoTree))
	}
	return nil
}

// setupQoS records the attachment's class (the request's, else the VPC's
// default) and limits, and creates its own HTB class for an egress limit;
// undo (releaseQoS) deletes it. The ingress limit is written to the data
// plane with the endpoint (qosEndpoint).
func (a *Agent) setupQoS(at *attachment, s *qos.Spec, v vpc.VPC) error {
	def, err := qos.ParseClass(v.QoSClass)
	if err != nil {
		return fail(types.ErrInvalidNetworkConfig, "qos", fmt.Errorf("vpc %q default: %w", v.Name, err))
	}
	s = qos.WithDefault(s, def)
	if s == nil {
		return nil
	}
	at.QoS = s.Class
	at.QoSIngressRate, at.QoSIngressBurst = s.IngressRate, s.IngressBurst
	if s.EgressRate == 0 {
		return nil
	}
	if at.QoS == qos.None {
		at.QoS = qos.Normal
	}
	minor, err := a.qos.AddPod(at.QoS, s.EgressRate, a.podMTUFor(v))
	if err != nil {
		return fail(types.ErrInternal, "qos", err)
	}
	at.QoSMinor, at.QoSEgressRate = minor, s.EgressRate
	return nil
}

// releaseQoS deletes the attachment's own HTB class, if any.
func (a *Agent) releaseQoS(at *attachment) error {
	if at.QoSMinor == 0 || a.qos == nil {
		return nil
	}
	if err := a.qos.DeletePod(at.QoSMinor); err != nil {
		return fmt.Errorf("qos: %w", err)
	}
	return nil
}

// pruneQoS deletes the pod classes on the uplink's tree that no attachment
// of atts owns: leaks of an agent that crashed between creating a class
// and recording it, or whose state was lost. At start-up, after restore.
func (a *Agent) pruneQoS(atts []*attachment) {
	if a.qos == nil {
		return
	}
	keep := map[uint16]bool{}
	for _, at := range atts {
		if at.QoSMinor != 0 {
			keep[at.QoSMinor] = true
		}
	}
	pruned, err := a.qos.Prune(keep)
	if len(pruned) > 0 {
		a.log.Info("deleted qos classes of attachments that no longer exist", "classids", fmt.Sprintf("%x", pruned))
	}
	if err != nil {
		a.log.Warn("pruning qos classes", "err", err)
	}
}

// qosEndpoint is the data plane's view of the attachment's QoS.
func (at *attachment) qosEndpoint(ep datapath.LocalEndpoint) datapath.LocalEndpoint {
	ep.QoS, ep.QoSMinor = datapath.QoSClass(at.QoS), at.QoSMinor
	if at.QoSIngressRate != 0 {
		ep.Ingress = datapath.IngressLimit{Rate: at.QoSIngressRate, Burst: qos.IngressBurst(at.QoSIngressRate, at.QoSIngressBurst)}
	}
	return ep
}
