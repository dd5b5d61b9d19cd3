package agent

import (
	"flag"
	"fmt"

	"github.com/cni-genie/cni-genie/pkg/datapath"
	"github.com/cni-genie/cni-genie/pkg/qos"
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
func (a *Agent) checkQoS(s *qos.Spec) error {
	if s == nil {
		return nil
	}
	if err := s.Validate(); err != nil {
		return fail(types.ErrInvalidNetworkConfig, "qos", err)
	}
	if s.IngressRate != 0 {
		return fail(types.ErrInvalidNetworkConfig, "qos",
			fmt.Errorf("ingressRate: ingress rate limits toward a pod are not supported (its traffic arrives by redirect_peer and meets no qdisc)"))
	}
	if s.EgressRate != 0 && a.qos == nil {
		return fail(types.ErrInvalidNetworkConfig, "qos", fmt.Errorf("egressRate: %w (genied --qos-uplink-rate)", qos.ErrNoTree))
	}
	return nil
}

// setupQoS records the attachment's class and creates its own HTB class
// for an egress limit; undo (releaseQoS) deletes it.
func (a *Agent) setupQoS(at *attachment, s *qos.Spec) error {
	if s == nil {
		return nil
	}
	at.QoS = s.Class
	if s.EgressRate == 0 {
		return nil
	}
	if at.QoS == qos.None {
		at.QoS = qos.Normal
	}
	minor, err := a.qos.AddPod(at.QoS, s.EgressRate)
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

// qosEndpoint is the data plane's view of the attachment's QoS.
func (at *attachment) qosEndpoint(ep datapath.LocalEndpoint) datapath.LocalEndpoint {
	ep.QoS, ep.QoSMinor = datapath.QoSClass(at.QoS), at.QoSMinor
	return ep
}
