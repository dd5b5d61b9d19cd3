package genie

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
)

// checkPrevResult compares the runtime's prevResult (the result it holds
// from ADD) with the result genie recorded when ADD returned: interfaces
// (name, MAC, MTU, sandbox), addresses (with gateway and interface) and
// routes (destination, gateway, MTU, metrics) must agree. The record is
// converted to the runtime's version first, so fields that version cannot
// carry (MTU before 1.0) are not compared. No prevResult (a runtime below
// 0.4.0, or a test calling CHECK by hand) or no recorded result (a record
// from before results were kept) skips the comparison.
func (inv *invocation) checkPrevResult(rec *Record) error {
	if inv.conf.RawPrevResult == nil || len(rec.Result) == 0 {
		return nil
	}
	what := fmt.Sprintf("check container %s interface %s: prevResult", rec.ContainerID, rec.IfName)
	raw, err := json.Marshal(inv.conf.RawPrevResult)
	if err != nil {
		return stepError(types.ErrDecodingFailure, what, err)
	}
	prev, err := normalize(inv.conf.CNIVersion, raw)
	if err != nil {
		return stepError(types.ErrDecodingFailure, what, err)
	}
	stored, err := normalize(inv.conf.CNIVersion, rec.Result)
	if err != nil {
		return stepError(types.ErrInternal, "check: recorded result", err)
	}
	if diffs := diffResults(prev, stored); len(diffs) > 0 {
		return &types.Error{Code: types.ErrInternal,
			Msg: what + " differs from the attachment: " + strings.Join(diffs, "; ")}
	}
	return nil
}

// normalize parses a result, converts it to version v and back to 1.x, so
// two results compare on the fields v can carry.
func normalize(v string, data []byte) (*current.Result, error) {
	var probe struct {
		CNIVersion string `json:"cniVersion"`
	}
	if err := json.Unmarshal(data, &probe); err != nil {
		return nil, fmt.Errorf("decoding result: %w", err)
	}
	if probe.CNIVersion == "" {
		probe.CNIVersion = v
	}
	r, err := version.NewResult(probe.CNIVersion, data)
	if err != nil {
		return nil, fmt.Errorf("decoding %s result: %w", probe.CNIVersion, err)
	}
	if r, err = r.GetAsVersion(v); err != nil {
		return nil, fmt.Errorf("converting result to %s: %w", v, err)
	}
	return current.NewResultFromResult(r)
}

// diffResults names every difference between the runtime's result and the
// recorded one, e.g. `route 10.99.0.0/16 via 10.30.0.1: in prevResult,
// not in the attachment`.
func diffResults(prev, rec *current.Result) []string {
	var out []string
	if len(prev.Interfaces) != len(rec.Interfaces) {
		out = append(out, fmt.Sprintf("%d interfaces, the attachment has %d", len(prev.Interfaces), len(rec.Interfaces)))
	}
	for i := range min(len(prev.Interfaces), len(rec.Interfaces)) {
		p, r := prev.Interfaces[i], rec.Interfaces[i]
		name := fmt.Sprintf("interface %d (%s)", i, r.Name)
		if p.Name != r.Name {
			out = append(out, fmt.Sprintf("%s: name %q, the attachment has %q", name, p.Name, r.Name))
		}
		if !strings.EqualFold(p.Mac, r.Mac) {
			out = append(out, fmt.Sprintf("%s: mac %q, the attachment has %q", name, p.Mac, r.Mac))
		}
		if p.Mtu != r.Mtu {
			out = append(out, fmt.Sprintf("%s: mtu %d, the attachment has %d", name, p.Mtu, r.Mtu))
		}
		if p.Sandbox != r.Sandbox {
			out = append(out, fmt.Sprintf("%s: sandbox %q, the attachment has %q", name, p.Sandbox, r.Sandbox))
		}
	}
	out = append(out, diffSets("address", ipStrings(prev.IPs), ipStrings(rec.IPs))...)
	out = append(out, diffSets("route", routeStrings(prev.Routes), routeStrings(rec.Routes))...)
	return out
}

func diffSets(kind string, prev, rec []string) []string {
	var out []string
	for _, p := range prev {
		if !slices.Contains(rec, p) {
			out = append(out, fmt.Sprintf("%s %s: in prevResult, not in the attachment", kind, p))
		}
	}
	for _, r := range rec {
		if !slices.Contains(prev, r) {
			out = append(out, fmt.Sprintf("%s %s: in the attachment, missing from prevResult", kind, r))
		}
	}
	return out
}

func ipStrings(ips []*current.IPConfig) []string {
	out := make([]string, 0, len(ips))
	for _, ip := range ips {
		s := ip.Address.String()
		if ip.Gateway != nil {
			s += " gw " + ip.Gateway.String()
		}
		if ip.Interface != nil {
			s += fmt.Sprintf(" on interface %d", *ip.Interface)
		}
		out = append(out, s)
	}
	return out
}

func routeStrings(rs []*types.Route) []string {
	out := make([]string, 0, len(rs))
	for _, r := range rs {
		s := r.Dst.String()
		if r.GW != nil {
			s += " via " + r.GW.String()
		}
		if r.MTU != 0 {
			s += fmt.Sprintf(" mtu %d", r.MTU)
		}
		if r.AdvMSS != 0 {
			s += fmt.Sprintf(" advmss %d", r.AdvMSS)
		}
		if r.Priority != 0 {
			s += fmt.Sprintf(" metric %d", r.Priority)
		}
		if r.Table != nil {
			s += fmt.Sprintf(" table %d", *r.Table)
		}
		if r.Scope != nil {
			s += fmt.Sprintf(" scope %d", *r.Scope)
		}
		out = append(out, s)
	}
	return out
}
