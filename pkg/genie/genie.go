package genie

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/cni-genie/cni-genie/pkg/agentapi"
	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"
	k8stypes "k8s.io/apimachinery/pkg/types"
)

// verbTimeout bounds one genie invocation; delegates and the agent have
// their own, shorter, bounds.
const verbTimeout = 5 * time.Minute

// gcGrace: GC never collects an attachment whose ADD was recorded less
// than this long before GC began (see CmdGC).
var gcGrace = 2 * time.Minute

// About is printed by the binary when run without CNI_COMMAND.
const About = "genie: CNI meta-plugin attaching a pod to several networks (delegated CNI plugins and genie VPCs)"

// setup parses the config and opens the log for one verb.
func setup(args *skel.CmdArgs) (*invocation, func(), error) {
	conf, err := ParseConfig(args.StdinData, args.Path)
	if err != nil {
		return nil, nil, stepError(types.ErrInvalidNetworkConfig, "parse config", err)
	}
	log, closeLog := newLogger(conf)
	inv, err := newInvocation(conf, args, log)
	if err != nil {
		closeLog()
		return nil, nil, stepError(types.ErrInvalidEnvironmentVariables, "parse CNI_ARGS", err)
	}
	return inv, closeLog, nil
}

// openRecord starts a verb that works from the attachment record (DEL,
// CHECK): the invocation, a context bounded by verbTimeout, the state dir's
// shared lock, and the record of args' container and interface (nil when
// there is none). release undoes all of it, in reverse.
func openRecord(args *skel.CmdArgs) (inv *invocation, ctx context.Context, rec *Record, release func(), err error) {
	inv, done, err := setup(args)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), verbTimeout)
	unlock, err := inv.store.lock(false)
	if err != nil {
		cancel()
		done()
		return nil, nil, nil, nil, stepError(types.ErrIOFailure, "lock state dir", err)
	}
	release = func() { unlock(); cancel(); done() }
	if rec, err = inv.store.load(args.ContainerID, args.IfName); err != nil {
		release()
		return nil, nil, nil, nil, stepError(types.ErrIOFailure, "read attachment record", err)
	}
	return inv, ctx, rec, release, nil
}

// CmdAdd is the ADD verb: it prints the merged result in the requested
// version.
func CmdAdd(args *skel.CmdArgs) error {
	res, err := Add(args)
	if err != nil {
		return err
	}
	return res.Print()
}

// Add runs ADD and returns the merged result in the version of the config
// (CmdAdd without the printing, for callers embedding genie).
func Add(args *skel.CmdArgs) (types.Result, error) {
	inv, done, err := setup(args)
	if err != nil {
		return nil, err
	}
	defer done()
	ctx, cancel := context.WithTimeout(context.Background(), verbTimeout)
	defer cancel()
	unlock, err := inv.store.lock(false)
	if err != nil {
		return nil, stepError(types.ErrIOFailure, "lock state dir", err)
	}
	defer unlock()
	res, err := inv.add(ctx)
	if err != nil {
		inv.log.Error("add failed", "container", args.ContainerID, "ifname", args.IfName, "err", err)
		return nil, err
	}
	out, err := res.GetAsVersion(inv.conf.CNIVersion)
	if err != nil {
		return nil, stepError(types.ErrIncompatibleCNIVersion, "convert result", err)
	}
	return out, nil
}

// add resolves, records, attaches (the first network alone, then the others
// at once: see attachWaves; rolling back on failure), and reports
// network-status. It returns the merged 1.x result, in record order.
func (inv *invocation) add(ctx context.Context) (*current.Result, error) {
	// A pod whose netns is already gone (a sandbox torn down while its
	// ADD queued) fails here, code 8, before any delegate or the agent
	// allocates for it.
	if _, err := os.Stat(inv.args.Netns); err != nil {
		return nil, stepError(types.ErrInvalidNetNS, "open netns", err)
	}
	plan, source, err := inv.resolve(ctx)
	if err != nil {
		return nil, err
	}
	inv.log.Debug("resolved", "took", time.Since(inv.start))
	rec := &Record{
		ContainerID: inv.args.ContainerID, IfName: inv.args.IfName, Netns: inv.args.Netns,
		CNIVersion: inv.conf.CNIVersion, Args: delegateArgs(inv.args.Args),
		PodNamespace: string(inv.pod.K8S_POD_NAMESPACE), PodName: string(inv.pod.K8S_POD_NAME),
		PodUID: string(inv.pod.K8S_POD_UID), Created: time.Now(),
	}
	for i := range plan {
		rn, err := inv.recordNetwork(i, &plan[i])
		if err != nil {
			return nil, stepError(types.ErrInvalidNetworkConfig, fmt.Sprintf("network %q (%s)", plan[i].Label, plan[i].IfName), err)
		}
		rec.Networks = append(rec.Networks, rn)
	}
	// A record left by an ADD that never finished (genie killed, runtime
	// retrying without DEL) describes attachments that may still exist:
	// delete them before planning anew, or they would leak.
	if old, err := inv.store.load(rec.ContainerID, rec.IfName); err == nil && old != nil {
		inv.log.Warn("add: deleting the attachments of an unfinished earlier ADD", "container", rec.ContainerID, "ifname", rec.IfName)
		if err := inv.detachAll(ctx, old, len(old.Networks)-1, rec.Netns); err != nil {
			return nil, stepError(types.ErrInternal, "clean up an unfinished earlier ADD", err)
		}
	}
	// The record goes to disk before any delegate runs: a crash from here
	// on is cleaned up by DEL.
	if err := inv.store.save(rec); err != nil {
		return nil, stepError(types.ErrIOFailure, "record attachment plan", err)
	}
	inv.log.Info("adding", "container", rec.ContainerID, "source", source, "networks", len(rec.Networks))

	// fail rolls back every attachment whose ADD ran and reports step's
	// failure (with the cause's CNI code).
	fail := func(atts []attachment, step string, cause error) (*current.Result, error) {
		return nil, inv.rollback(ctx, rec, atts, stepError(types.ErrInternal, step, cause))
	}
	inv.log.Debug("planned", "took", time.Since(inv.start))
	atts, attaching := inv.attachAll(ctx, rec)
	if i := firstFailure(atts); i >= 0 {
		n := &rec.Networks[i]
		return fail(atts, fmt.Sprintf("network %q (%s): add", n.Selection, n.IfName), atts[i].err)
	}
	results := make([]*current.Result, len(atts))
	owner := -1
	for i := range atts {
		results[i] = atts[i].res
		if len(rec.Networks[i].DefaultRoute) > 0 {
			owner = i
		}
	}
	if owner >= 0 {
		n := &rec.Networks[owner]
		if err := applyDefaultRoute(rec.Netns, n.IfName, parseGateways(n.DefaultRoute), results, owner); err != nil {
			return fail(atts, fmt.Sprintf("network %q (%s): set default-route", n.Selection, n.IfName), err)
		}
	}
	if inv.kube != nil {
		st := make([]nadv1.NetworkStatus, len(rec.Networks))
		for i := range rec.Networks {
			st[i] = networkStatus(rec.Networks[i].Selection, rec.Networks[i].IfName, results[i], rec.Networks[i].Default)
		}
		uid := k8stypes.UID(rec.PodUID)
		if uid == "" && inv.podObj != nil {
			uid = inv.podObj.UID
		}
		t0 := time.Now()
		if err := inv.kube.SetNetworkStatusForUID(ctx, rec.PodNamespace, rec.PodName, uid, st); err != nil {
			return fail(atts, fmt.Sprintf("write network-status of pod %s/%s", rec.PodNamespace, rec.PodName), err)
		}
		inv.log.Debug("network-status written", "took", time.Since(t0))
	}
	merged := mergeResults(results)
	if rec.Result, err = json.Marshal(merged); err == nil {
		err = inv.store.save(rec)
	}
	if err != nil {
		return fail(atts, "record the result", err)
	}
	// took is the whole ADD after process start-up; attaching is the wall
	// time of the attachments (concurrent ones overlap), so took minus
	// attaching is genie's own work.
	inv.log.Info("added", "container", rec.ContainerID, "networks", len(rec.Networks),
		"took", time.Since(inv.start), "attaching", attaching, "attachParallelism", inv.conf.AttachParallelism)
	return merged, nil
}

// CmdDel is the DEL verb. With a record it deletes every recorded network in
// reverse order, trying all and reporting the first error (the record is
// kept for the retry). Without one it deletes the default network (best
// effort) and succeeds.
func CmdDel(args *skel.CmdArgs) error {
	inv, ctx, rec, release, err := openRecord(args)
	if err != nil {
		return err
	}
	defer release()
	if rec == nil {
		inv.delWithoutRecord(ctx)
		return nil
	}
	if err := inv.detachAll(ctx, rec, len(rec.Networks)-1, args.Netns); err != nil {
		return err
	}
	if err := inv.store.remove(rec.ContainerID, rec.IfName); err != nil {
		return stepError(types.ErrIOFailure, "remove attachment record", err)
	}
	return nil
}

// delWithoutRecord is DEL for an attachment genie has no record of (ADD
// never ran, or a record from before an upgrade): best-effort DEL of the
// default network under CNI_IFNAME.
func (inv *invocation) delWithoutRecord(ctx context.Context) {
	cd, err := loadConfDir(inv.conf.ConfDir, inv.log)
	if err != nil {
		inv.log.Warn("del without record: conf dir", "err", err)
		return
	}
	defs, err := cd.defaults(inv.conf.DefaultNetworks)
	if err != nil || len(defs) == 0 || defs[0].IsVPC() {
		if err == nil && len(defs) > 0 {
			_ = inv.agent().Detach(ctx, &agentapi.DetachRequest{ContainerID: inv.args.ContainerID, IfName: inv.args.IfName, Netns: inv.args.Netns})
		}
		return
	}
	rt := &libcni.RuntimeConf{ContainerID: inv.args.ContainerID, NetNS: inv.args.Netns, IfName: inv.args.IfName,
		Args: delegateArgs(inv.args.Args)}
	if err := inv.cni.DelNetworkList(ctx, defs[0].List, rt); err != nil {
		inv.log.Warn("del without record: default network", "network", defs[0].Name, "err", err)
	}
}

// CmdCheck is the CHECK verb: every recorded network is checked.
func CmdCheck(args *skel.CmdArgs) error {
	inv, ctx, rec, release, err := openRecord(args)
	if err != nil {
		return err
	}
	defer release()
	if rec == nil {
		return &types.Error{Code: types.ErrInternal,
			Msg: fmt.Sprintf("check: no attachment record for container %s interface %s", args.ContainerID, args.IfName)}
	}
	if err := inv.checkPrevResult(rec); err != nil {
		return err
	}
	for i := range rec.Networks {
		n := &rec.Networks[i]
		if err := inv.check(ctx, rec, n, args.Netns); err != nil {
			return stepError(types.ErrInternal, fmt.Sprintf("network %q (%s): check", n.Selection, n.IfName), err)
		}
	}
	return nil
}

// CmdGC is the GC verb. Records of attachments not in
// cni.dev/valid-attachments are deleted like DEL; then every delegate network
// (conf dir and records) gets GC with the delegate attachments of the valid
// records, and the node agent gets the valid VPC attachments.
//
// A record younger than gcGrace counts as valid: a runtime computes its
// list, then calls GC, and an ADD that began in between (GC waits for its
// shared lock) would otherwise be collected the moment it succeeded.
func CmdGC(args *skel.CmdArgs) error {
	inv, done, err := setup(args)
	if err != nil {
		return err
	}
	defer done()
	ctx, cancel := context.WithTimeout(context.Background(), verbTimeout)
	defer cancel()
	unlock, err := inv.store.lock(true)
	if err != nil {
		return stepError(types.ErrIOFailure, "lock state dir", err)
	}
	defer unlock()
	if err := inv.gc(ctx); err != nil {
		return stepError(types.ErrInternal, "gc", err)
	}
	return nil
}

func (inv *invocation) gc(ctx context.Context) error {
	valid := map[types.GCAttachment]bool{}
	for _, a := range inv.conf.ValidAttachments {
		valid[a] = true
	}
	recs, listErr := inv.store.list()
	var errs []error
	if listErr != nil {
		errs = append(errs, listErr)
	}
	// Per delegate network name: its config and the attachments to keep.
	type gcNet struct {
		list  *libcni.NetworkConfigList
		valid []types.GCAttachment
	}
	nets := map[string]*gcNet{}
	var order []string
	addNet := func(name string, l *libcni.NetworkConfigList) *gcNet {
		if g, ok := nets[name]; ok {
			return g
		}
		g := &gcNet{list: l}
		nets[name] = g
		order = append(order, name)
		return g
	}
	var vpcValid []agentapi.Attachment
	vpcSeen := false
	gcStart := time.Now()
	for _, rec := range recs {
		keep := valid[types.GCAttachment{ContainerID: rec.ContainerID, IfName: rec.IfName}]
		if !keep && !rec.Created.IsZero() && gcStart.Sub(rec.Created) < gcGrace {
			// The runtime's valid list predates this ADD (it was computed
			// before the ADD began, and this GC waited for the ADD's
			// shared lock): the attachment is live, keep it and its
			// delegate and VPC attachments.
			inv.log.Info("gc: keeping an attachment added after the valid list may have been computed",
				"container", rec.ContainerID, "ifname", rec.IfName, "age", gcStart.Sub(rec.Created))
			keep = true
		}
		if !keep {
			inv.log.Info("gc: deleting stale attachment", "container", rec.ContainerID, "ifname", rec.IfName)
			if err := inv.detachAll(ctx, rec, len(rec.Networks)-1, rec.Netns); err != nil {
				errs = append(errs, fmt.Errorf("stale attachment %s/%s: %w", rec.ContainerID, rec.IfName, err))
				continue
			}
			if err := inv.store.remove(rec.ContainerID, rec.IfName); err != nil {
				errs = append(errs, err)
			}
			continue
		}
		for i := range rec.Networks {
			n := &rec.Networks[i]
			att := types.GCAttachment{ContainerID: rec.ContainerID, IfName: n.IfName}
			if n.IsVPC() {
				vpcSeen = true
				vpcValid = append(vpcValid, agentapi.Attachment{ContainerID: rec.ContainerID, IfName: n.IfName})
				continue
			}
			l, err := recordList(n)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			g := addNet(l.Name, l)
			g.valid = append(g.valid, att)
		}
	}
	cd, err := loadConfDir(inv.conf.ConfDir, inv.log)
	if err != nil {
		errs = append(errs, err)
	} else {
		for _, n := range cd.all() {
			if n.IsVPC() {
				vpcSeen = true
				continue
			}
			if _, known := nets[n.Name]; !known && !inv.binariesPresent(n) {
				// Never used by genie and not installed: nothing to collect.
				inv.log.Info("gc: skipping network without plugin binary", "network", n.Name)
				continue
			}
			addNet(n.Name, n.List)
		}
	}
	for _, name := range order {
		g := nets[name]
		if err := inv.cni.GCNetworkList(ctx, g.list, &libcni.GCArgs{ValidAttachments: g.valid}); err != nil {
			errs = append(errs, fmt.Errorf("network %q: %w", name, err))
		}
	}
	if vpcSeen {
		if vpcValid == nil {
			vpcValid = []agentapi.Attachment{}
		}
		if _, err := inv.agent().GC(ctx, &agentapi.GCRequest{Valid: vpcValid}); err != nil {
			errs = append(errs, fmt.Errorf("node agent: %w", err))
		}
	}
	return errors.Join(errs...)
}

// CmdStatus is the STATUS verb: genie is ready when the default network's
// plugins are installed, every installed delegate network of the conf dir
// reports ready and, when a VPC network is configured, the node agent does.
// Failures are CNI code 50 (or 51 when a delegate says existing attachments
// are affected).
func CmdStatus(args *skel.CmdArgs) error {
	inv, done, err := setup(args)
	if err != nil {
		return err
	}
	defer done()
	ctx, cancel := context.WithTimeout(context.Background(), verbTimeout)
	defer cancel()
	return inv.status(ctx)
}

func (inv *invocation) status(ctx context.Context) error {
	cd, err := loadConfDir(inv.conf.ConfDir, inv.log)
	if err != nil {
		return &types.Error{Code: agentapi.ErrCodeNotAvailable, Msg: "status: " + err.Error()}
	}
	defs, err := cd.defaults(inv.conf.DefaultNetworks)
	if err != nil {
		return &types.Error{Code: agentapi.ErrCodeNotAvailable, Msg: "status: " + err.Error()}
	}
	for _, d := range defs {
		if !d.IsVPC() && !inv.binariesPresent(d) {
			return &types.Error{Code: agentapi.ErrCodeNotAvailable,
				Msg: fmt.Sprintf("status: default network %q: plugin binary missing from %s", d.Name, inv.conf.BinDir)}
		}
	}
	code := uint(0)
	var msgs []error
	vpc := false
	for _, n := range cd.all() {
		if n.IsVPC() {
			vpc = true
			continue
		}
		if !inv.binariesPresent(n) {
			// Not installed: no pod can use it, and it must not make the
			// whole node not-ready (a stale conf file is common).
			continue
		}
		if err := inv.cni.GetStatusNetworkList(ctx, n.List); err != nil {
			c := agentapi.ErrCodeNotAvailable
			var te *types.Error
			if errors.As(err, &te) && te.Code == agentapi.ErrCodeNotAvailableExisting {
				c = agentapi.ErrCodeNotAvailableExisting
			}
			code = max(code, c)
			msgs = append(msgs, fmt.Errorf("network %q: %w", n.Name, err))
		}
	}
	if vpc {
		st, err := inv.agent().Status(ctx)
		switch {
		case err != nil:
			code = max(code, agentapi.ErrCodeNotAvailable)
			msgs = append(msgs, fmt.Errorf("node agent: %w", err))
		case !st.Ready:
			code = max(code, agentapi.ErrCodeNotAvailable)
			msgs = append(msgs, fmt.Errorf("node agent not ready: %s", st.Message))
		}
	}
	if code != 0 {
		return &types.Error{Code: code, Msg: "status: " + errors.Join(msgs...).Error()}
	}
	return nil
}
