package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/cni-genie/cni-genie/pkg/agentapi"
	"github.com/cni-genie/cni-genie/pkg/datapath"
	"github.com/cni-genie/cni-genie/pkg/ipam"
	"github.com/cni-genie/cni-genie/pkg/store"
	"github.com/cni-genie/cni-genie/pkg/vpc"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
)

var _ agentapi.Backend = (*Agent)(nil)

// attachTimeout bounds the store round trips of one Attach (they are the
// only steps that wait on the network), and undoTimeout those of its
// rollback: with the store down an ADD fails with code 11 well within 5 s
// (#7.4), where a healthy store answers in milliseconds.
const (
	attachTimeout = 3 * time.Second
	undoTimeout   = 500 * time.Millisecond
)

// stepError is an attach failure with the CNI code to report.
type stepError struct {
	code uint
	step string
	err  error
}

func (e *stepError) Error() string { return e.step + ": " + e.err.Error() }
func (e *stepError) Unwrap() error { return e.err }

func fail(code uint, step string, err error) error { return &stepError{code, step, err} }

// codeFor picks the CNI error code for a store or IPAM failure.
func codeFor(err error) uint {
	switch {
	case store.Transient(err), errors.Is(err, context.Canceled):
		// Store down or busy, or out of time: nothing is wrong with the
		// request.
		return types.ErrTryAgainLater
	case errors.Is(err, store.ErrNotFound), errors.Is(err, vpc.ErrInvalid),
		errors.Is(err, ipam.ErrAddressInUse), errors.Is(err, ipam.ErrAddressReserved),
		errors.Is(err, ipam.ErrOwnerConflict), errors.Is(err, store.ErrConflict):
		return types.ErrInvalidNetworkConfig
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return types.ErrTryAgainLater
	}
	return types.ErrInternal
}

// podRef names the pod in messages: namespace/name, or the container ID.
func podRef(ns, name, containerID string) string {
	if name != "" {
		if ns == "" {
			return "pod " + name
		}
		return "pod " + ns + "/" + name
	}
	if len(containerID) > 12 {
		containerID = containerID[:12]
	}
	return "container " + containerID
}

// Attach implements agentapi.Backend: it attaches a pod to a VPC subnet.
// Every step is undone if a later one fails.
func (a *Agent) Attach(ctx context.Context, req *agentapi.AttachRequest) (res *current.Result, err error) {
	start := time.Now()
	what := fmt.Sprintf("attach vpc %q subnet %q to %s", req.VPC, req.Subnet, podRef(req.PodNamespace, req.PodName, req.ContainerID))
	defer func() {
		a.m.addSeconds.Observe(time.Since(start).Seconds())
		if err != nil {
			a.m.addErrors.Inc()
			var se *stepError
			code := uint(types.ErrInternal)
			if errors.As(err, &se) {
				code = se.code
			}
			a.log.Warn("attach failed", "container", req.ContainerID, "if", req.IfName, "err", err)
			err = &types.Error{Code: code, Msg: what + ": " + err.Error()}
			return
		}
		a.log.Info("attached", "container", req.ContainerID, "if", req.IfName, "vpc", req.VPC, "subnet", req.Subnet,
			"ip", res.IPs[0].Address.String(), "took", time.Since(start))
	}()
	if !a.ready.Load() {
		return nil, fail(types.ErrTryAgainLater, "agent", errNotReady)
	}
	// Answer before the plugin's own timeout (agentapi: 30s), so a hung
	// store gives a clear error instead of a dropped connection.
	ctx, cancel := context.WithTimeout(ctx, attachTimeout)
	defer cancel()
	a.gcMu.RLock()
	defer a.gcMu.RUnlock()
	key := hostVethName(req.ContainerID, req.IfName)
	defer a.keys.lock(key)()

	// Parse the request before touching anything.
	var requested netip.Addr
	var requestedBits int
	switch len(req.IPs) {
	case 0:
	case 1:
		requested, requestedBits, err = parseRequestedIP(req.IPs[0])
		if err != nil {
			return nil, fail(types.ErrInvalidNetworkConfig, "requested ip", err)
		}
	default:
		return nil, fail(types.ErrInvalidNetworkConfig, "requested ips",
			fmt.Errorf("%d addresses requested, a VPC attachment has exactly one IPv4 address", len(req.IPs)))
	}
	if err := a.checkQoS(req.QoS); err != nil {
		return nil, err
	}
	mac := podMAC(req.ContainerID, req.IfName)
	if req.MAC != "" {
		if mac, err = parseMAC(req.MAC); err != nil {
			return nil, fail(types.ErrInvalidNetworkConfig, "requested mac", err)
		}
	}

	a.mu.Lock()
	prev := a.atts[key]
	a.mu.Unlock()
	if prev != nil {
		if prev.Complete && prev.VPC == req.VPC && prev.Subnet == req.Subnet && prev.Netns == req.Netns {
			// A repeated ADD: report the existing attachment.
			v, s, err := a.lookup(ctx, req.VPC, req.Subnet)
			if err != nil {
				return nil, fail(codeFor(err), "resolve network", err)
			}
			return a.result(prev, v, s), nil
		}
		if !prev.Complete {
			return nil, fail(types.ErrTryAgainLater, "attachment",
				fmt.Errorf("interface %q of container %s is half removed after a failed detach; DEL it first", req.IfName, req.ContainerID))
		}
		return nil, fail(types.ErrInvalidNetworkConfig, "attachment",
			fmt.Errorf("container %s already has interface %q (vpc %q subnet %q)", req.ContainerID, req.IfName, prev.VPC, prev.Subnet))
	}

	// 1. Resolve the network and hold a reference on the VPC's watch, so
	//    its remote endpoints are programmed before the ADD returns.
	v, err := a.acquireVPC(ctx, req.VPC)
	if err != nil {
		return nil, fail(codeFor(err), "resolve vpc", err)
	}
	acquired := true
	success := false
	defer func() {
		if !success && acquired {
			a.releaseVPC(req.VPC)
		}
	}()
	_, sub, err := a.lookup(ctx, req.VPC, req.Subnet)
	if err != nil {
		return nil, fail(codeFor(err), "resolve subnet", err)
	}
	if requested.IsValid() && requestedBits != 0 && requestedBits != sub.CIDR.Bits() {
		return nil, fail(types.ErrInvalidNetworkConfig, "requested ip",
			fmt.Errorf("%s has prefix length /%d, subnet %s is a /%d", req.IPs[0], requestedBits, sub.CIDR, sub.CIDR.Bits()))
	}

	at := &attachment{
		ContainerID: req.ContainerID, IfName: req.IfName, Netns: req.Netns,
		PodNamespace: req.PodNamespace, PodName: req.PodName,
		VPC: req.VPC, Subnet: req.Subnet, VNI: v.VNI, HostIf: key,
		Prefix: sub.CIDR.Bits(), MAC: mac.String(), DefaultRoute: req.DefaultRoute,
		Labels: newLabelSet(req.Labels),
	}
	if err := a.resolveQoS(at, req.QoS, v); err != nil { // qos.go
		return nil, err
	}
	// 2. Record the attachment before creating anything, so a crash
	//    leaves a record the next start-up undoes.
	if err := a.state.save(at); err != nil {
		return nil, fail(types.ErrInternal, "save state", err)
	}
	a.mu.Lock()
	a.atts[key] = at
	a.mu.Unlock()
	defer func() {
		if !success {
			cctx, cancel := context.WithTimeout(context.Background(), undoTimeout)
			a.undo(cctx, at)
			cancel()
		}
	}()

	// 3. Allocate the address (local unless the node's blocks are full).
	// Distinct from the pod's other attachments' addresses: with
	// overlapping VPCs the source address picks the interface.
	alloc, err := a.ipam.AllocateForPod(ctx, req.VPC, req.Subnet, req.ContainerID, at.owner(), requested)
	if err != nil {
		return nil, fail(codeFor(err), "allocate IP", err)
	}
	at.IP = alloc.IP.Addr()
	if alloc.IP.Bits() != sub.CIDR.Bits() || alloc.Gateway != sub.Gateway {
		// The cached subnet is stale (deleted and re-created with
		// another range): read it again.
		if _, sub, err = a.lookupFresh(ctx, req.VPC, req.Subnet); err != nil {
			return nil, fail(codeFor(err), "resolve subnet", err)
		}
		at.Prefix = sub.CIDR.Bits()
	}
	if err := a.state.save(at); err != nil {
		return nil, fail(types.ErrInternal, "save state", err)
	}

	// 6 (started now). Publish the endpoint so other nodes of the VPC
	//    learn it: the store round trips (about 2 ms) overlap the veth
	//    and data plane steps, and the ADD returns only once both are
	//    done. A remote packet arriving before the local entry exists is
	//    dropped and counted, as for any address not yet in use. Every
	//    return waits for the write first, so a failed ADD's undo cannot
	//    race it and leak the endpoint.
	published := make(chan error, 1)
	ep := at.endpoint(a.cfg.NodeName)
	ep.Published = time.Now()
	go func() {
		_, err := a.st.PutEndpoint(ctx, ep)
		published <- err
	}()
	publishErr, waited := error(nil), false
	waitPublished := func() error {
		if !waited {
			publishErr, waited = <-published, true
		}
		return publishErr
	}
	defer waitPublished() // runs before the undo registered above

	// 4. The veth pair, configured inside the pod's netns.
	podAddr := &net.IPNet{IP: net.IP(at.IP.AsSlice()), Mask: net.CIDRMask(sub.CIDR.Bits(), 32)}
	var vpcCIDR *net.IPNet
	if v.CIDR != sub.CIDR {
		vpcCIDR = prefixToIPNet(v.CIDR)
	}
	lr, err := setupPodLink(&podLink{
		netns: req.Netns, ifName: req.IfName, hostName: key, mac: mac, mtu: a.podMTUFor(v),
		addr: podAddr, gateway: net.IP(sub.Gateway.AsSlice()), subnet: prefixToIPNet(sub.CIDR),
		vpcCIDR: vpcCIDR, defRoute: req.DefaultRoute, sysctlNet: a.cfg.ProcSysNet,
	})
	if lr != nil {
		at.HostIndex = lr.hostIndex
	}
	if err != nil {
		var nsErr ns.NSPathNotExistErr
		code := uint(types.ErrInternal)
		if errors.As(err, &nsErr) {
			code = types.ErrInvalidNetNS
		}
		return nil, fail(code, "create interface", err)
	}
	if err := a.state.save(at); err != nil {
		return nil, fail(types.ErrInternal, "save state", err)
	}

	// 5. The data plane: map entry first, then the program (a packet
	//    before the entry exists would be dropped as UNKNOWN_ENDPOINT).
	if err := a.setupQoS(at, v); err != nil {
		return nil, err
	}
	if err := a.state.save(at); err != nil {
		return nil, fail(types.ErrInternal, "save state", err)
	}
	if err := a.programLocal(at); err != nil {
		return nil, fail(types.ErrInternal, "program data plane", err)
	}
	a.mu.Lock()
	a.local[vniIP{at.VNI, at.IP}] = key
	a.mu.Unlock()

	// 6. The endpoint is published.
	if err := waitPublished(); err != nil {
		a.m.storeErrors.WithLabelValues("put_endpoint").Inc()
		return nil, fail(codeFor(err), "publish endpoint", err)
	}
	if err := a.publishDirectory(ctx, ep); err != nil { // directory.go
		return nil, fail(types.ErrTryAgainLater, "publish endpoint to the directory", err)
	}
	at.Complete = true
	if err := a.state.save(at); err != nil {
		return nil, fail(types.ErrInternal, "save state", err)
	}
	success = true
	a.m.endpoints.WithLabelValues("local").Inc()
	return a.result(at, v, sub), nil
}

// result builds the CNI 1.1.0 result of an attachment.
func (a *Agent) result(at *attachment, v vpc.VPC, sub vpc.Subnet) *current.Result {
	gw := net.IP(sub.Gateway.AsSlice())
	res := &current.Result{
		CNIVersion: current.ImplementedSpecVersion,
		Interfaces: []*current.Interface{
			{Name: at.HostIf},
			{Name: at.IfName, Mac: at.MAC, Mtu: a.podMTUFor(v), Sandbox: at.Netns},
		},
		IPs: []*current.IPConfig{{
			Interface: current.Int(1),
			Address:   net.IPNet{IP: net.IP(at.IP.AsSlice()), Mask: net.CIDRMask(sub.CIDR.Bits(), 32)},
			Gateway:   gw,
		}},
	}
	if link, err := netlink.LinkByName(at.HostIf); err == nil {
		res.Interfaces[0].Mac = link.Attrs().HardwareAddr.String()
	}
	if v.CIDR != sub.CIDR {
		res.Routes = append(res.Routes, &types.Route{Dst: *prefixToIPNet(v.CIDR), GW: gw})
	}
	if at.DefaultRoute {
		res.Routes = append(res.Routes, &types.Route{Dst: net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}, GW: gw})
	}
	return res
}

// undo removes everything an attachment may have created, in reverse
// order, tolerating what is already gone. It is the rollback of a failed
// Attach, the body of Detach and the cleanup of stale records.
func (a *Agent) undo(ctx context.Context, at *attachment) []error {
	var errs []error
	// The store endpoint goes first and the address is freed only once it
	// is gone (releaseAddress, at the end): a freed address may be handed
	// to the next pod at once, and while the store still publishes the
	// old endpoint with it, the two would collide in the VPC.
	unpublished := true
	if err := a.st.DeleteEndpoint(ctx, at.VPC, at.owner()); err != nil {
		a.m.storeErrors.WithLabelValues("delete_endpoint").Inc()
		errs = append(errs, fmt.Errorf("delete endpoint from store: %w", err))
		unpublished = false
	} else {
		a.unpublishDirectory(at.VNI, at.IP) // directory.go
	}
	a.mu.Lock()
	if at.IP.IsValid() && a.local[vniIP{at.VNI, at.IP}] == at.key() {
		if err := a.dp.DeleteEndpoint(at.VNI, at.IP); err != nil {
			errs = append(errs, fmt.Errorf("delete map entry: %w", err))
		}
		delete(a.local, vniIP{at.VNI, at.IP})
		// A remote endpoint that meanwhile took the address (its block
		// moved to another node) gets its entry now.
		if vs := a.vpcs[at.VPC]; vs != nil {
			if r, ok := vs.ownerOf(at.IP); ok {
				if err := a.writeRemoteLocked(at.VNI, r); err != nil {
					a.log.Warn("programming remote endpoint", "vpc", at.VPC, "err", err)
				}
			}
		}
	} else if at.IP.IsValid() && !at.Complete {
		// A failed attach may have written the entry before recording it.
		if _, taken := a.local[vniIP{at.VNI, at.IP}]; !taken {
			_ = a.dp.DeleteEndpoint(at.VNI, at.IP)
		}
	}
	a.mu.Unlock()
	// Outside a.mu: a detach waits for an RCU grace period in the kernel
	// (7-20 ms), and the data plane serialises it itself.
	if at.HostIndex != 0 {
		if err := a.dp.DetachEndpoint(at.HostIndex); err != nil {
			errs = append(errs, fmt.Errorf("detach pod program: %w", err))
		}
	}
	if at.IP.IsValid() && at.Netns != "" {
		// Best effort: a vanished netns took its rules with it.
		removeSourceRule(at.Netns, at.IP)
	}
	if err := deleteHostLink(at.HostIf); err != nil {
		errs = append(errs, err)
	}
	if err := a.releaseQoS(at); err != nil {
		errs = append(errs, err)
	}
	if err := a.releaseAddress(ctx, at, unpublished); err != nil {
		errs = append(errs, err)
	}
	if len(errs) == 0 {
		if err := a.state.remove(at.key()); err != nil {
			errs = append(errs, err)
		}
	}
	// On failure the attachment stays known (and recorded), so a retried
	// DEL, GC or the next start-up finishes the job; every step above is
	// idempotent.
	if len(errs) == 0 {
		a.mu.Lock()
		if a.atts[at.key()] == at {
			delete(a.atts, at.key())
		}
		a.mu.Unlock()
	}
	return errs
}

// releaseAddress frees the attachment's address, but only once its store
// endpoint is gone (unpublished): after a failed store delete both stay,
// and the retried DEL, GC or the next start-up deletes the endpoint and
// then frees the address.
func (a *Agent) releaseAddress(ctx context.Context, at *attachment, unpublished bool) error {
	if !unpublished {
		return nil // the store error is reported by the caller
	}
	if err := a.ipam.Release(ctx, at.owner()); err != nil {
		return fmt.Errorf("release IP: %w", err)
	}
	return nil
}

// Detach implements agentapi.Backend. It is idempotent and works when the
// pod's netns is already gone (the veth went with it).
func (a *Agent) Detach(ctx context.Context, req *agentapi.DetachRequest) error {
	start := time.Now()
	defer func() { a.m.delSeconds.Observe(time.Since(start).Seconds()) }()
	if req.ContainerID == "" || req.IfName == "" {
		return &types.Error{Code: types.ErrInvalidNetworkConfig, Msg: "detach request: containerID and ifName are required"}
	}
	if !a.ready.Load() {
		return notReadyError("detach")
	}
	a.gcMu.RLock()
	defer a.gcMu.RUnlock()
	key := hostVethName(req.ContainerID, req.IfName)
	defer a.keys.lock(key)()
	if err := a.detach(ctx, key, req.ContainerID, req.IfName); err != nil {
		return &types.Error{Code: types.ErrInternal,
			Msg: fmt.Sprintf("detach container %s interface %q: %v", req.ContainerID, req.IfName, err)}
	}
	return nil
}

// detach undoes the attachment key; the caller holds its key lock.
func (a *Agent) detach(ctx context.Context, key, containerID, ifName string) error {
	a.mu.Lock()
	at := a.atts[key]
	a.mu.Unlock()
	if at == nil {
		// Unknown to this agent (never attached, already detached, or a
		// lost record): still remove what may exist under the
		// deterministic names.
		at = &attachment{ContainerID: containerID, IfName: ifName, HostIf: key}
		alloc, ok := a.ipam.Get(at.owner())
		if !ok {
			if err := deleteHostLink(key); err != nil {
				return err
			}
			return nil
		}
		at.VPC, at.Subnet, at.IP = alloc.VPC, alloc.Subnet, alloc.IP.Addr()
	}
	// The first detach of a complete attachment drops its VPC reference;
	// a retry after a partial failure does not.
	wasComplete := at.Complete
	at.Complete = false
	errs := a.undo(ctx, at)
	if at.VPC != "" && wasComplete {
		a.m.endpoints.WithLabelValues("local").Dec()
		a.releaseVPC(at.VPC)
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	a.log.Info("detached", "container", containerID, "if", ifName, "vpc", at.VPC, "ip", at.IP)
	return nil
}

// Check implements agentapi.Backend: the host veth, the pod interface with
// its address and MAC, and the data plane entry must all be in place.
func (a *Agent) Check(ctx context.Context, req *agentapi.CheckRequest) error {
	if !a.ready.Load() {
		return notReadyError("check")
	}
	key := hostVethName(req.ContainerID, req.IfName)
	defer a.keys.lock(key)()
	a.mu.Lock()
	at := a.atts[key]
	a.mu.Unlock()
	what := fmt.Sprintf("check container %s interface %q", req.ContainerID, req.IfName)
	if at == nil || !at.Complete {
		return &types.Error{Code: types.ErrInvalidNetworkConfig, Msg: what + ": no such attachment"}
	}
	if _, err := netlink.LinkByName(at.HostIf); err != nil {
		return &types.Error{Code: types.ErrInternal, Msg: fmt.Sprintf("%s: host veth %s: %v", what, at.HostIf, err)}
	}
	netnsPath := req.Netns
	if netnsPath == "" {
		netnsPath = at.Netns
	}
	addr := &net.IPNet{IP: net.IP(at.IP.AsSlice()), Mask: net.CIDRMask(at.Prefix, 32)}
	if err := checkPodLink(netnsPath, at.IfName, addr, at.hwAddr()); err != nil {
		return &types.Error{Code: types.ErrInternal, Msg: what + ": " + err.Error()}
	}
	a.mu.Lock()
	e, err := a.dp.LookupEndpoint(at.VNI, at.IP)
	a.mu.Unlock()
	if errors.Is(err, datapath.ErrNoEndpoint) {
		return &types.Error{Code: types.ErrInternal, Msg: fmt.Sprintf("%s: no data plane entry for vni %d ip %s", what, at.VNI, at.IP)}
	}
	if err != nil {
		return &types.Error{Code: types.ErrInternal, Msg: what + ": reading data plane: " + err.Error()}
	}
	if !e.Local() || e.HostIfindex != at.HostIndex || e.MAC.String() != at.MAC {
		return &types.Error{Code: types.ErrInternal, Msg: fmt.Sprintf("%s: data plane entry for %s is %+v", what, at.IP, e)}
	}
	return nil
}

// GC implements agentapi.Backend: every local attachment the runtime no
// longer lists is detached, then IPAM frees addresses of unknown owners.
func (a *Agent) GC(ctx context.Context, req *agentapi.GCRequest) (*agentapi.GCResponse, error) {
	if !a.ready.Load() {
		return nil, notReadyError("gc")
	}
	a.gcMu.Lock()
	defer a.gcMu.Unlock()
	valid := map[string]bool{}
	for _, v := range req.Valid {
		valid[hostVethName(v.ContainerID, v.IfName)] = true
	}
	a.mu.Lock()
	var stale []*attachment
	for k, at := range a.atts {
		if !valid[k] {
			stale = append(stale, at)
		}
	}
	a.mu.Unlock()
	resp := &agentapi.GCResponse{}
	var errs []string
	for _, at := range stale {
		unlock := a.keys.lock(at.key()) // CHECK may look at it meanwhile
		err := a.detach(ctx, at.key(), at.ContainerID, at.IfName)
		unlock()
		if err != nil {
			errs = append(errs, err.Error())
			continue
		}
		resp.Freed = append(resp.Freed, agentapi.Attachment{ContainerID: at.ContainerID, IfName: at.IfName})
	}
	a.mu.Lock()
	owners := make([]string, 0, len(a.atts))
	for _, at := range a.atts {
		owners = append(owners, at.owner())
	}
	a.mu.Unlock()
	if freed, err := a.ipam.GC(ctx, owners); err != nil {
		errs = append(errs, "ipam gc: "+err.Error())
	} else if len(freed) > 0 {
		a.log.Info("gc freed addresses without attachment", "owners", freed)
	}
	if len(errs) > 0 {
		return resp, &types.Error{Code: types.ErrInternal, Msg: "gc: " + strings.Join(errs, "; ")}
	}
	return resp, nil
}

// Status implements agentapi.Backend: ready once the data plane and the
// store are up, not ready while the store does not answer.
func (a *Agent) Status(ctx context.Context) (*agentapi.StatusResponse, error) {
	if a.ready.Load() {
		// ADDs need the store (publishing the endpoint): probe it with a
		// cheap read. The runtime calls STATUS every few seconds.
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := a.st.GetNode(pctx, a.cfg.NodeName)
		cancel()
		if err != nil {
			a.m.storeErrors.WithLabelValues("status_probe").Inc()
			return &agentapi.StatusResponse{Ready: false, Message: "store unreachable: " + err.Error()}, nil
		}
		return &agentapi.StatusResponse{Ready: true}, nil
	}
	msg, _ := a.notReady.Load().(string)
	return &agentapi.StatusResponse{Ready: false, Message: msg}, nil
}

func notReadyError(verb string) error {
	return &types.Error{Code: types.ErrTryAgainLater, Msg: verb + ": " + errNotReady.Error()}
}

// parseRequestedIP accepts "10.1.0.5" or "10.1.0.5/24" and returns the
// address and the prefix length (0 when bare).
func parseRequestedIP(s string) (netip.Addr, int, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil || !p.Addr().Is4() {
			return netip.Addr{}, 0, fmt.Errorf("%q is not an IPv4 address or CIDR", s)
		}
		return p.Addr(), p.Bits(), nil
	}
	ip, err := netip.ParseAddr(s)
	if err != nil || !ip.Is4() {
		return netip.Addr{}, 0, fmt.Errorf("%q is not an IPv4 address or CIDR", s)
	}
	return ip, 0, nil
}

func prefixToIPNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: net.IP(p.Masked().Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

var _ = datapath.EncapOverhead
