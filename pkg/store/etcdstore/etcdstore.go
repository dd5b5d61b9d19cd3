package etcdstore

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/cni-genie/cni-genie/pkg/directory"
	"github.com/cni-genie/cni-genie/pkg/store"
	"github.com/cni-genie/cni-genie/pkg/vpc"
)

// DefaultPrefix is the key prefix of all objects.
const DefaultPrefix = "/genie/v1"

// Store is the etcd implementation of store.Store.
type Store struct {
	cli    *clientv3.Client
	kv     availKV
	owned  bool
	prefix string
	// shards is the directory's shard count (directory.go).
	shards int
}

var _ store.Store = (*Store)(nil)

// New connects to etcd at endpoints ("unix:///path", "http://host:port")
// and checks the connection.
func New(ctx context.Context, endpoints []string, opts Options) (*Store, error) {
	if len(endpoints) == 0 {
		return nil, fmt.Errorf("connect to etcd: no endpoints")
	}
	if opts.DialTimeout == 0 {
		opts.DialTimeout = 5 * time.Second
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:            endpoints,
		DialTimeout:          opts.DialTimeout,
		DialKeepAliveTime:    10 * time.Second,
		DialKeepAliveTimeout: 5 * time.Second,
		Logger:               zapLogger(opts.Logger, "etcd-client"),
		Context:              context.WithoutCancel(ctx),
	})
	if err != nil {
		return nil, fmt.Errorf("connect to etcd %s: %w", strings.Join(endpoints, ","), err)
	}
	// clientv3.New does not fail on an unreachable server: probe it.
	pctx, cancel := context.WithTimeout(ctx, opts.DialTimeout)
	defer cancel()
	if _, err := cli.Get(pctx, "/genie-probe", clientv3.WithCountOnly()); err != nil {
		cli.Close()
		if unavailable(err) {
			return nil, fmt.Errorf("connect to etcd %s: %w: %w", strings.Join(endpoints, ","), store.ErrUnavailable, err)
		}
		return nil, fmt.Errorf("connect to etcd %s: %w", strings.Join(endpoints, ","), err)
	}
	s := NewFromClient(cli, opts)
	s.owned = true
	return s, nil
}

// NewFromClient wraps an existing etcd client; Close does not close it.
func NewFromClient(cli *clientv3.Client, opts Options) *Store {
	p := strings.TrimRight(opts.Prefix, "/")
	if p == "" {
		p = DefaultPrefix
	}
	sh := opts.DirectoryShards
	if sh <= 0 || sh&(sh-1) != 0 {
		sh = directory.DefaultShards
	}
	return &Store{cli: cli, kv: newAvailKV(cli), prefix: p, shards: sh}
}

// Close closes the client if New created it.
func (s *Store) Close() error {
	if s.owned {
		return s.cli.Close()
	}
	return nil
}

// --- keys (see doc.go) ---

func (s *Store) vpcKey(name string) string { return s.prefix + "/vpcs/" + name }
func (s *Store) vpcsPrefix() string        { return s.prefix + "/vpcs/" }
func (s *Store) vniKey(n uint32) string    { return fmt.Sprintf("%s/vni/%08d", s.prefix, n) }
func (s *Store) vniPrefix() string         { return s.prefix + "/vni/" }
func (s *Store) subnetKey(v, n string) string {
	return s.prefix + "/subnets/" + v + "/" + n
}
func (s *Store) subnetsPrefix(v string) string {
	if v == "" {
		return s.prefix + "/subnets/"
	}
	return s.prefix + "/subnets/" + v + "/"
}
func (s *Store) nodeKey(n string) string { return s.prefix + "/nodes/" + n }
func (s *Store) nodesPrefix() string     { return s.prefix + "/nodes/" }
func (s *Store) endpointKey(v, id string) string {
	return s.prefix + "/endpoints/" + v + "/" + id
}
func (s *Store) endpointsPrefix(v string) string {
	if v == "" {
		return s.prefix + "/endpoints/"
	}
	return s.prefix + "/endpoints/" + v + "/"
}
func (s *Store) endpointIPKey(v string, ip netip.Addr) string {
	return s.prefix + "/endpoint-ips/" + v + "/" + ip.String()
}
func (s *Store) blockKey(v, sn string, b netip.Prefix) string {
	return s.prefix + "/blocks/" + v + "/" + sn + "/" + b.String()
}
func (s *Store) blocksPrefix(v, sn string) string {
	switch {
	case v == "":
		return s.prefix + "/blocks/"
	case sn == "":
		return s.prefix + "/blocks/" + v + "/"
	}
	return s.prefix + "/blocks/" + v + "/" + sn + "/"
}

// read runs ops in one read-only transaction, so all results share a
// revision, and returns the responses and that revision.
func (s *Store) read(ctx context.Context, ops ...clientv3.Op) ([]*clientv3.GetResponse, int64, error) {
	resp, err := s.kv.Txn(ctx).Then(ops...).Commit()
	if err != nil {
		return nil, 0, err
	}
	out := make([]*clientv3.GetResponse, len(resp.Responses))
	for i, r := range resp.Responses {
		out[i] = (*clientv3.GetResponse)(r.GetResponseRange())
	}
	return out, resp.Header.Revision, nil
}

func noVPC(what, name string) error {
	return fmt.Errorf("%s: vpc %q: %w", what, name, store.ErrNotFound)
}

func noSubnet(what, v, n string) error {
	return fmt.Errorf("%s: subnet %q: %w", what, v+"/"+n, store.ErrNotFound)
}

// --- VPCs ---

// CreateVPC implements store.Store.
func (s *Store) CreateVPC(ctx context.Context, v vpc.VPC) (vpc.VPC, error) {
	what := fmt.Sprintf("create vpc %q", v.Name)
	v.VNI = 0
	if err := v.Validate(); err != nil {
		return vpc.VPC{}, fmt.Errorf("%s: %w", what, err)
	}
	try := store.NewRetrier(what)
	for try.Next(ctx) {
		rs, _, err := s.read(ctx,
			clientv3.OpGet(s.vpcKey(v.Name)),
			clientv3.OpGet(s.vniPrefix(), clientv3.WithPrefix(), clientv3.WithKeysOnly(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend)))
		if err != nil {
			return vpc.VPC{}, fmt.Errorf("%s: %w", what, err)
		}
		if len(rs[0].Kvs) > 0 {
			return vpc.VPC{}, fmt.Errorf("%s: %w", what, store.ErrExists)
		}
		vni := vpc.MinVNI
		for _, kv := range rs[1].Kvs {
			n, err := strconv.ParseUint(strings.TrimPrefix(string(kv.Key), s.vniPrefix()), 10, 32)
			if err != nil || uint32(n) < vni {
				continue
			}
			if uint32(n) != vni {
				break
			}
			vni++
		}
		if vni > vpc.MaxVNI {
			return vpc.VPC{}, fmt.Errorf("%s: %w", what, store.ErrVNIExhausted)
		}
		v.VNI = vni
		b, _ := json.Marshal(v)
		resp, err := s.kv.Txn(ctx).If(
			clientv3.Compare(clientv3.CreateRevision(s.vpcKey(v.Name)), "=", 0),
			clientv3.Compare(clientv3.CreateRevision(s.vniKey(vni)), "=", 0),
		).Then(
			clientv3.OpPut(s.vpcKey(v.Name), string(b)),
			clientv3.OpPut(s.vniKey(vni), v.Name),
		).Commit()
		if err != nil {
			return vpc.VPC{}, fmt.Errorf("%s: %w", what, err)
		}
		if resp.Succeeded {
			return v, nil
		}
	}
	return vpc.VPC{}, try.Err()
}

// GetVPC implements store.Store.
func (s *Store) GetVPC(ctx context.Context, name string) (vpc.VPC, error) {
	var v vpc.VPC
	if err := s.get(ctx, s.vpcKey(name), &v); err != nil {
		return vpc.VPC{}, fmt.Errorf("get vpc %q: %w", name, err)
	}
	return v, nil
}

// ListVPCs implements store.Store.
func (s *Store) ListVPCs(ctx context.Context) ([]vpc.VPC, error) {
	out, _, err := list[vpc.VPC](ctx, s, s.vpcsPrefix())
	if err != nil {
		return nil, fmt.Errorf("list vpcs: %w", err)
	}
	return out, nil
}

// DeleteVPC implements store.Store.
func (s *Store) DeleteVPC(ctx context.Context, name string) error {
	what := fmt.Sprintf("delete vpc %q", name)
	try := store.NewRetrier(what)
	for try.Next(ctx) {
		rs, _, err := s.read(ctx,
			clientv3.OpGet(s.vpcKey(name)),
			clientv3.OpGet(s.subnetsPrefix(name), clientv3.WithPrefix(), clientv3.WithKeysOnly()))
		if err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		if len(rs[0].Kvs) == 0 {
			return fmt.Errorf("%s: %w", what, store.ErrNotFound)
		}
		if n := len(rs[1].Kvs); n > 0 {
			names := make([]string, 0, n)
			for _, kv := range rs[1].Kvs {
				names = append(names, strings.TrimPrefix(string(kv.Key), s.subnetsPrefix(name)))
			}
			return fmt.Errorf("%s: it has %d subnet(s) (%s): %w", what, n, strings.Join(names, ", "), store.ErrInUse)
		}
		var v vpc.VPC
		if err := json.Unmarshal(rs[0].Kvs[0].Value, &v); err != nil {
			return fmt.Errorf("%s: decode: %w", what, err)
		}
		resp, err := s.kv.Txn(ctx).If(
			clientv3.Compare(clientv3.ModRevision(s.vpcKey(name)), "=", rs[0].Kvs[0].ModRevision),
			clientv3.Compare(clientv3.CreateRevision(s.subnetsPrefix(name)).WithPrefix(), "=", 0),
			clientv3.Compare(clientv3.CreateRevision(s.endpointsPrefix(name)).WithPrefix(), "=", 0),
		).Then(
			clientv3.OpDelete(s.vpcKey(name)),
			clientv3.OpDelete(s.vniKey(v.VNI)),
		).Commit()
		if err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		if resp.Succeeded {
			return nil
		}
		// Endpoints without subnets cannot normally exist; report them.
		gr, err := s.kv.Get(ctx, s.endpointsPrefix(name), clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err == nil && gr.Count > 0 {
			return fmt.Errorf("%s: it has %d endpoint(s): %w", what, gr.Count, store.ErrInUse)
		}
	}
	return try.Err()
}

// --- subnets ---

// CreateSubnet implements store.Store.
func (s *Store) CreateSubnet(ctx context.Context, sn vpc.Subnet) (vpc.Subnet, error) {
	what := fmt.Sprintf("create subnet %q", sn.Key())
	sn = sn.WithDefaults()
	if err := vpc.ValidateName(sn.VPC); err != nil {
		return vpc.Subnet{}, fmt.Errorf("%s: vpc: %w", what, err)
	}
	try := store.NewRetrier(what)
	for try.Next(ctx) {
		rs, rev, err := s.read(ctx,
			clientv3.OpGet(s.vpcKey(sn.VPC)),
			clientv3.OpGet(s.subnetsPrefix(sn.VPC), clientv3.WithPrefix()),
			clientv3.OpGet(s.servicesPrefix(sn.VPC), clientv3.WithPrefix()))
		if err != nil {
			return vpc.Subnet{}, fmt.Errorf("%s: %w", what, err)
		}
		if len(rs[0].Kvs) == 0 {
			return vpc.Subnet{}, noVPC(what, sn.VPC)
		}
		var parent vpc.VPC
		if err := json.Unmarshal(rs[0].Kvs[0].Value, &parent); err != nil {
			return vpc.Subnet{}, fmt.Errorf("%s: decode vpc: %w", what, err)
		}
		if err := sn.Validate(parent); err != nil {
			return vpc.Subnet{}, fmt.Errorf("%s: %w", what, err)
		}
		siblings, err := decodeAll[vpc.Subnet](rs[1].Kvs)
		if err != nil {
			return vpc.Subnet{}, fmt.Errorf("%s: %w", what, err)
		}
		for _, o := range siblings {
			if o.Name == sn.Name {
				return vpc.Subnet{}, fmt.Errorf("%s: %w", what, store.ErrExists)
			}
		}
		if err := vpc.CheckOverlap(sn, siblings); err != nil {
			return vpc.Subnet{}, fmt.Errorf("%s: %w: %w", what, err, store.ErrConflict)
		}
		if err := s.checkSubnetVIPs(sn, rs[2].Kvs); err != nil {
			return vpc.Subnet{}, fmt.Errorf("%s: %w", what, err)
		}
		b, _ := json.Marshal(sn)
		resp, err := s.kv.Txn(ctx).If(
			clientv3.Compare(clientv3.CreateRevision(s.vpcKey(sn.VPC)), "=", rs[0].Kvs[0].CreateRevision),
			// No sibling appeared or changed since the overlap check, and
			// no service since the VIP check (CreateService compares the
			// subnets the same way: of two racing creates, one retries).
			clientv3.Compare(clientv3.ModRevision(s.subnetsPrefix(sn.VPC)).WithPrefix(), "<", rev+1),
			clientv3.Compare(clientv3.ModRevision(s.servicesPrefix(sn.VPC)).WithPrefix(), "<", rev+1),
		).Then(clientv3.OpPut(s.subnetKey(sn.VPC, sn.Name), string(b))).Commit()
		if err != nil {
			return vpc.Subnet{}, fmt.Errorf("%s: %w", what, err)
		}
		if resp.Succeeded {
			return sn, nil
		}
	}
	return vpc.Subnet{}, try.Err()
}

// GetSubnet implements store.Store.
func (s *Store) GetSubnet(ctx context.Context, vpcName, name string) (vpc.Subnet, error) {
	var sn vpc.Subnet
	if err := s.get(ctx, s.subnetKey(vpcName, name), &sn); err != nil {
		return vpc.Subnet{}, fmt.Errorf("get subnet %q: %w", vpcName+"/"+name, err)
	}
	return sn, nil
}

// ListSubnets implements store.Store.
func (s *Store) ListSubnets(ctx context.Context, vpcName string) ([]vpc.Subnet, error) {
	out, _, err := list[vpc.Subnet](ctx, s, s.subnetsPrefix(vpcName))
	if err != nil {
		return nil, fmt.Errorf("list subnets of vpc %q: %w", vpcName, err)
	}
	slices.SortFunc(out, func(a, b vpc.Subnet) int { return strings.Compare(a.Key(), b.Key()) })
	return out, nil
}

// DeleteSubnet implements store.Store.
func (s *Store) DeleteSubnet(ctx context.Context, vpcName, name string) error {
	what := fmt.Sprintf("delete subnet %q", vpcName+"/"+name)
	try := store.NewRetrier(what)
	for try.Next(ctx) {
		rs, rev, err := s.read(ctx,
			clientv3.OpGet(s.subnetKey(vpcName, name)),
			clientv3.OpGet(s.endpointsPrefix(vpcName), clientv3.WithPrefix()))
		if err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		if len(rs[0].Kvs) == 0 {
			return fmt.Errorf("%s: %w", what, store.ErrNotFound)
		}
		eps, err := decodeAll[vpc.Endpoint](rs[1].Kvs)
		if err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		var users []string
		for _, e := range eps {
			if e.Subnet == name {
				users = append(users, e.ID)
			}
		}
		if len(users) > 0 {
			more := ""
			if len(users) > 3 {
				more = ", ..."
				users = users[:3]
			}
			return fmt.Errorf("%s: it has endpoint(s) %s%s: %w", what, strings.Join(users, ", "), more, store.ErrInUse)
		}
		resp, err := s.kv.Txn(ctx).If(
			clientv3.Compare(clientv3.ModRevision(s.subnetKey(vpcName, name)), "=", rs[0].Kvs[0].ModRevision),
			// No endpoint of the VPC appeared or changed since the check.
			clientv3.Compare(clientv3.ModRevision(s.endpointsPrefix(vpcName)).WithPrefix(), "<", rev+1),
		).Then(
			clientv3.OpDelete(s.subnetKey(vpcName, name)),
			clientv3.OpDelete(s.blocksPrefix(vpcName, name), clientv3.WithPrefix()),
		).Commit()
		if err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		if resp.Succeeded {
			return nil
		}
	}
	return try.Err()
}

// --- nodes ---

// RegisterNode implements store.Store.
func (s *Store) RegisterNode(ctx context.Context, n vpc.Node) error {
	if err := n.Validate(); err != nil {
		return fmt.Errorf("register node %q: %w", n.Name, err)
	}
	b, _ := json.Marshal(n)
	if _, err := s.kv.Put(ctx, s.nodeKey(n.Name), string(b)); err != nil {
		return fmt.Errorf("register node %q: %w", n.Name, err)
	}
	return nil
}

// GetNode implements store.Store.
func (s *Store) GetNode(ctx context.Context, name string) (vpc.Node, error) {
	var n vpc.Node
	if err := s.get(ctx, s.nodeKey(name), &n); err != nil {
		return vpc.Node{}, fmt.Errorf("get node %q: %w", name, err)
	}
	return n, nil
}

// ListNodes implements store.Store.
func (s *Store) ListNodes(ctx context.Context) ([]vpc.Node, int64, error) {
	out, rev, err := list[vpc.Node](ctx, s, s.nodesPrefix())
	if err != nil {
		return nil, 0, fmt.Errorf("list nodes: %w", err)
	}
	return out, rev, nil
}

// DeleteNode implements store.Store.
func (s *Store) DeleteNode(ctx context.Context, name string) error {
	if _, err := s.kv.Delete(ctx, s.nodeKey(name)); err != nil {
		return fmt.Errorf("delete node %q: %w", name, err)
	}
	return nil
}

// WatchNodes implements store.Store.
func (s *Store) WatchNodes(ctx context.Context, fromRevision int64) <-chan store.NodeEvent {
	ch := make(chan store.NodeEvent)
	go watch(ctx, s, s.nodesPrefix(), fromRevision, "watch nodes", func(ev rawEvent) (store.NodeEvent, bool) {
		out := store.NodeEvent{Type: ev.typ, Revision: ev.rev, Err: ev.err}
		switch ev.typ {
		case store.EventPut:
			if err := json.Unmarshal(ev.value, &out.Node); err != nil {
				return out, false
			}
		case store.EventDelete:
			if ev.prev == nil || json.Unmarshal(ev.prev, &out.Node) != nil {
				out.Node = vpc.Node{Name: ev.name}
			}
		}
		return out, true
	}, ch)
	return ch
}

// --- endpoints ---

// PutEndpoint implements store.Store.
func (s *Store) PutEndpoint(ctx context.Context, e vpc.Endpoint) (vpc.Endpoint, error) {
	what := fmt.Sprintf("put endpoint %q", e.Key())
	if err := e.Validate(); err != nil {
		return vpc.Endpoint{}, fmt.Errorf("%s: %w", what, err)
	}
	try := store.NewRetrier(what)
	for try.Next(ctx) {
		rs, _, err := s.read(ctx,
			clientv3.OpGet(s.vpcKey(e.VPC)),
			clientv3.OpGet(s.subnetKey(e.VPC, e.Subnet)),
			clientv3.OpGet(s.endpointKey(e.VPC, e.ID)),
			clientv3.OpGet(s.endpointIPKey(e.VPC, e.IP)))
		if err != nil {
			return vpc.Endpoint{}, fmt.Errorf("%s: %w", what, err)
		}
		if len(rs[0].Kvs) == 0 {
			return vpc.Endpoint{}, noVPC(what, e.VPC)
		}
		if len(rs[1].Kvs) == 0 {
			return vpc.Endpoint{}, noSubnet(what, e.VPC, e.Subnet)
		}
		var v vpc.VPC
		var sn vpc.Subnet
		if err := errors.Join(json.Unmarshal(rs[0].Kvs[0].Value, &v), json.Unmarshal(rs[1].Kvs[0].Value, &sn)); err != nil {
			return vpc.Endpoint{}, fmt.Errorf("%s: decode: %w", what, err)
		}
		if !sn.Assignable(e.IP) {
			return vpc.Endpoint{}, fmt.Errorf("%s: ip %s is not assignable in %s (gateway %s): %w", what, e.IP, sn, sn.Gateway, vpc.ErrInvalid)
		}
		if kvs := rs[3].Kvs; len(kvs) > 0 && string(kvs[0].Value) != e.ID {
			return vpc.Endpoint{}, fmt.Errorf("%s: ip %s is held by endpoint %q: %w", what, e.IP, e.VPC+"/"+string(kvs[0].Value), store.ErrConflict)
		}
		// The address must come from a block the endpoint's node holds.
		blk := netip.PrefixFrom(e.IP, sn.BlockPrefixLen).Masked()
		bkey := s.blockKey(e.VPC, e.Subnet, blk)
		br, err := s.kv.Get(ctx, bkey)
		if err != nil {
			return vpc.Endpoint{}, fmt.Errorf("%s: %w", what, err)
		}
		var b store.Block
		if len(br.Kvs) == 0 {
			return vpc.Endpoint{}, fmt.Errorf("%s: ip %s: block %s of %s is not claimed by node %q: %w", what, e.IP, blk, sn, e.Node, store.ErrConflict)
		}
		if err := json.Unmarshal(br.Kvs[0].Value, &b); err != nil {
			return vpc.Endpoint{}, fmt.Errorf("%s: decode block: %w", what, err)
		}
		if b.Node != e.Node {
			return vpc.Endpoint{}, fmt.Errorf("%s: ip %s: block %s of %s is held by node %q, not %q: %w", what, e.IP, blk, sn, b.Node, e.Node, store.ErrConflict)
		}
		e.VNI = v.VNI
		val, _ := json.Marshal(e)
		cmps := []clientv3.Cmp{
			clientv3.Compare(clientv3.ModRevision(s.vpcKey(e.VPC)), "=", rs[0].Kvs[0].ModRevision),
			clientv3.Compare(clientv3.ModRevision(s.subnetKey(e.VPC, e.Subnet)), "=", rs[1].Kvs[0].ModRevision),
			clientv3.Compare(clientv3.ModRevision(bkey), "=", br.Kvs[0].ModRevision),
			clientv3.Compare(clientv3.ModRevision(s.endpointKey(e.VPC, e.ID)), "=", modRev(rs[2])),
			clientv3.Compare(clientv3.ModRevision(s.endpointIPKey(e.VPC, e.IP)), "=", modRev(rs[3])),
		}
		// The directory key goes with the endpoint (directory.go).
		ops := []clientv3.Op{clientv3.OpPut(s.endpointKey(e.VPC, e.ID), string(val)), s.dirPut(e)}
		if len(rs[3].Kvs) == 0 {
			ops = append(ops, clientv3.OpPut(s.endpointIPKey(e.VPC, e.IP), e.ID))
		}
		if len(rs[2].Kvs) > 0 {
			var old vpc.Endpoint
			if json.Unmarshal(rs[2].Kvs[0].Value, &old) == nil && old.IP != e.IP && old.IP.IsValid() {
				// The endpoint moved to another IP: drop its old index
				// entry if it is still ours.
				ok, rev, err := s.indexOwned(ctx, e.VPC, old.IP, e.ID)
				if err != nil {
					return vpc.Endpoint{}, fmt.Errorf("%s: %w", what, err)
				}
				if ok {
					cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(s.endpointIPKey(e.VPC, old.IP)), "=", rev))
					ops = append(ops, clientv3.OpDelete(s.endpointIPKey(e.VPC, old.IP)), clientv3.OpDelete(s.dirKey(cmp.Or(old.VNI, e.VNI), old.IP)))
				}
			}
		}
		resp, err := s.kv.Txn(ctx).If(cmps...).Then(ops...).Commit()
		if err != nil {
			return vpc.Endpoint{}, fmt.Errorf("%s: %w", what, err)
		}
		if resp.Succeeded {
			return e, nil
		}
	}
	return vpc.Endpoint{}, try.Err()
}

// indexOwned reports whether the IP index entry of ip names id, and its
// mod revision.
func (s *Store) indexOwned(ctx context.Context, vpcName string, ip netip.Addr, id string) (bool, int64, error) {
	r, err := s.kv.Get(ctx, s.endpointIPKey(vpcName, ip))
	if err != nil {
		return false, 0, err
	}
	if len(r.Kvs) == 0 || string(r.Kvs[0].Value) != id {
		return false, 0, nil
	}
	return true, r.Kvs[0].ModRevision, nil
}

// GetEndpoint implements store.Store.
func (s *Store) GetEndpoint(ctx context.Context, vpcName, id string) (vpc.Endpoint, error) {
	var e vpc.Endpoint
	if err := s.get(ctx, s.endpointKey(vpcName, id), &e); err != nil {
		return vpc.Endpoint{}, fmt.Errorf("get endpoint %q: %w", vpcName+"/"+id, err)
	}
	return e, nil
}

// DeleteEndpoint implements store.Store.
func (s *Store) DeleteEndpoint(ctx context.Context, vpcName, id string) error {
	what := fmt.Sprintf("delete endpoint %q", vpcName+"/"+id)
	try := store.NewRetrier(what)
	for try.Next(ctx) {
		r, err := s.kv.Get(ctx, s.endpointKey(vpcName, id))
		if err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		if len(r.Kvs) == 0 {
			return nil
		}
		cmps := []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(s.endpointKey(vpcName, id)), "=", r.Kvs[0].ModRevision)}
		ops := []clientv3.Op{clientv3.OpDelete(s.endpointKey(vpcName, id))}
		var e vpc.Endpoint
		if json.Unmarshal(r.Kvs[0].Value, &e) == nil && e.IP.IsValid() {
			ok, rev, err := s.indexOwned(ctx, vpcName, e.IP, id)
			if err != nil {
				return fmt.Errorf("%s: %w", what, err)
			}
			if ok {
				cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(s.endpointIPKey(vpcName, e.IP)), "=", rev))
				ops = append(ops, clientv3.OpDelete(s.endpointIPKey(vpcName, e.IP)))
				if e.VNI != 0 {
					ops = append(ops, clientv3.OpDelete(s.dirKey(e.VNI, e.IP)))
				}
			}
		}
		resp, err := s.kv.Txn(ctx).If(cmps...).Then(ops...).Commit()
		if err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		if resp.Succeeded {
			return nil
		}
	}
	return try.Err()
}

// ListEndpoints implements store.Store.
func (s *Store) ListEndpoints(ctx context.Context, vpcName string) ([]vpc.Endpoint, int64, error) {
	out, rev, err := list[vpc.Endpoint](ctx, s, s.endpointsPrefix(vpcName))
	if err != nil {
		return nil, 0, fmt.Errorf("list endpoints of vpc %q: %w", vpcName, err)
	}
	slices.SortFunc(out, func(a, b vpc.Endpoint) int { return strings.Compare(a.Key(), b.Key()) })
	return out, rev, nil
}

// WatchEndpoints implements store.Store.
func (s *Store) WatchEndpoints(ctx context.Context, vpcName string, fromRevision int64) <-chan store.EndpointEvent {
	ch := make(chan store.EndpointEvent)
	go watch(ctx, s, s.endpointsPrefix(vpcName), fromRevision, fmt.Sprintf("watch endpoints of vpc %q", vpcName), func(ev rawEvent) (store.EndpointEvent, bool) {
		out := store.EndpointEvent{Type: ev.typ, Revision: ev.rev, Err: ev.err}
		switch ev.typ {
		case store.EventPut:
			if err := json.Unmarshal(ev.value, &out.Endpoint); err != nil {
				return out, false
			}
		case store.EventDelete:
			if ev.prev == nil || json.Unmarshal(ev.prev, &out.Endpoint) != nil {
				// ev.name is "<vpc>/<id>", or "<id>" when watching one VPC.
				v, id := vpcName, ev.name
				if vpcName == "" {
					v, id, _ = strings.Cut(ev.name, "/")
				}
				out.Endpoint = vpc.Endpoint{VPC: v, ID: id}
			}
		}
		return out, true
	}, ch)
	return ch
}

// --- blocks ---

// ClaimBlock implements store.Store.
func (s *Store) ClaimBlock(ctx context.Context, vpcName, subnetName, node string) (store.Block, error) {
	return s.claim(ctx, vpcName, subnetName, node, netip.Addr{})
}

// ClaimBlockContaining implements store.Store.
func (s *Store) ClaimBlockContaining(ctx context.Context, vpcName, subnetName, node string, addr netip.Addr) (store.Block, error) {
	if !addr.IsValid() {
		return store.Block{}, fmt.Errorf("claim block of subnet %q for node %q: no address given: %w", vpcName+"/"+subnetName, node, vpc.ErrInvalid)
	}
	return s.claim(ctx, vpcName, subnetName, node, addr)
}

func (s *Store) claim(ctx context.Context, vpcName, subnetName, node string, addr netip.Addr) (store.Block, error) {
	what := fmt.Sprintf("claim block of subnet %q for node %q", vpcName+"/"+subnetName, node)
	if err := vpc.ValidateNodeName(node); err != nil {
		return store.Block{}, fmt.Errorf("%s: %w", what, err)
	}
	try := store.NewRetrier(what)
	for try.Next(ctx) {
		rs, _, err := s.read(ctx,
			clientv3.OpGet(s.subnetKey(vpcName, subnetName)),
			clientv3.OpGet(s.blocksPrefix(vpcName, subnetName), clientv3.WithPrefix()))
		if err != nil {
			return store.Block{}, fmt.Errorf("%s: %w", what, err)
		}
		if len(rs[0].Kvs) == 0 {
			return store.Block{}, noSubnet(what, vpcName, subnetName)
		}
		var sn vpc.Subnet
		if err := json.Unmarshal(rs[0].Kvs[0].Value, &sn); err != nil {
			return store.Block{}, fmt.Errorf("%s: decode subnet: %w", what, err)
		}
		blocks, err := decodeAll[store.Block](rs[1].Kvs)
		if err != nil {
			return store.Block{}, fmt.Errorf("%s: %w", what, err)
		}
		held := make(map[netip.Prefix]string, len(blocks))
		for _, b := range blocks {
			held[b.CIDR] = b.Node
		}
		var want netip.Prefix
		if addr.IsValid() {
			if !sn.CIDR.Contains(addr) {
				return store.Block{}, fmt.Errorf("%s: %s is outside %s: %w", what, addr, sn, vpc.ErrInvalid)
			}
			want = netip.PrefixFrom(addr, sn.BlockPrefixLen).Masked()
			switch owner, ok := held[want]; {
			case ok && owner == node:
				return store.Block{VPC: vpcName, Subnet: subnetName, CIDR: want, Node: node}, nil
			case ok:
				return store.Block{}, fmt.Errorf("%s: block %s containing %s is held by node %q: %w", what, want, addr, owner, store.ErrConflict)
			}
		} else {
			want = firstFreeBlock(sn, held)
			if !want.IsValid() {
				return store.Block{}, fmt.Errorf("%s: all %d blocks of /%d in %s are claimed: %w", what, len(held), sn.BlockPrefixLen, sn, store.ErrSubnetFull)
			}
		}
		b := store.Block{VPC: vpcName, Subnet: subnetName, CIDR: want, Node: node}
		val, _ := json.Marshal(b)
		key := s.blockKey(vpcName, subnetName, want)
		resp, err := s.kv.Txn(ctx).If(
			clientv3.Compare(clientv3.CreateRevision(s.subnetKey(vpcName, subnetName)), "=", rs[0].Kvs[0].CreateRevision),
			clientv3.Compare(clientv3.CreateRevision(key), "=", 0),
		).Then(clientv3.OpPut(key, string(val))).Commit()
		if err != nil {
			return store.Block{}, fmt.Errorf("%s: %w", what, err)
		}
		if resp.Succeeded {
			return b, nil
		}
	}
	return store.Block{}, try.Err()
}

// firstFreeBlock returns the lowest block of sn not in held that contains
// at least one assignable address, or the zero prefix.
func firstFreeBlock(sn vpc.Subnet, held map[netip.Prefix]string) netip.Prefix {
	size := uint64(1) << (32 - sn.BlockPrefixLen)
	total := uint64(1) << (32 - sn.CIDR.Bits())
	base := addrToU32(sn.CIDR.Addr())
	for off := uint64(0); off < total; off += size {
		p := netip.PrefixFrom(u32ToAddr(base+uint32(off)), sn.BlockPrefixLen)
		if _, ok := held[p]; ok {
			continue
		}
		if blockAssignable(sn, p) > 0 {
			return p
		}
	}
	return netip.Prefix{}
}

// blockAssignable returns how many addresses of block b (a block of sn)
// can be handed to pods: all but the subnet's network, broadcast and
// gateway addresses (three distinct addresses in a valid subnet).
func blockAssignable(sn vpc.Subnet, b netip.Prefix) int {
	n := 1 << (32 - b.Bits())
	for _, a := range []netip.Addr{sn.CIDR.Addr(), vpc.LastAddr(sn.CIDR), sn.Gateway} {
		if b.Contains(a) {
			n--
		}
	}
	return n
}

// ReleaseBlock implements store.Store.
func (s *Store) ReleaseBlock(ctx context.Context, vpcName, subnetName string, block netip.Prefix, node string) error {
	what := fmt.Sprintf("release block %s of subnet %q for node %q", block, vpcName+"/"+subnetName, node)
	key := s.blockKey(vpcName, subnetName, block)
	try := store.NewRetrier(what)
	for try.Next(ctx) {
		r, err := s.kv.Get(ctx, key)
		if err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		if len(r.Kvs) == 0 {
			return nil
		}
		var b store.Block
		if err := json.Unmarshal(r.Kvs[0].Value, &b); err != nil {
			return fmt.Errorf("%s: decode: %w", what, err)
		}
		if b.Node != node {
			return fmt.Errorf("%s: held by node %q: %w", what, b.Node, store.ErrConflict)
		}
		resp, err := s.kv.Txn(ctx).If(
			clientv3.Compare(clientv3.ModRevision(key), "=", r.Kvs[0].ModRevision),
		).Then(clientv3.OpDelete(key)).Commit()
		if err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		if resp.Succeeded {
			return nil
		}
	}
	return try.Err()
}

// ListBlocks implements store.Store.
func (s *Store) ListBlocks(ctx context.Context, vpcName, subnetName string) ([]store.Block, error) {
	if vpcName == "" {
		subnetName = ""
	}
	out, _, err := list[store.Block](ctx, s, s.blocksPrefix(vpcName, subnetName))
	if err != nil {
		return nil, fmt.Errorf("list blocks of subnet %q: %w", vpcName+"/"+subnetName, err)
	}
	slices.SortFunc(out, func(a, b store.Block) int {
		if c := strings.Compare(a.VPC, b.VPC); c != 0 {
			return c
		}
		if c := strings.Compare(a.Subnet, b.Subnet); c != 0 {
			return c
		}
		return a.CIDR.Addr().Compare(b.CIDR.Addr())
	})
	return out, nil
}

// --- helpers ---

func (s *Store) get(ctx context.Context, key string, v any) error {
	r, err := s.kv.Get(ctx, key)
	if err != nil {
		return err
	}
	if len(r.Kvs) == 0 {
		return store.ErrNotFound
	}
	if err := json.Unmarshal(r.Kvs[0].Value, v); err != nil {
		return fmt.Errorf("decode %s: %w", key, err)
	}
	return nil
}

func list[T any](ctx context.Context, s *Store, prefix string) ([]T, int64, error) {
	r, err := s.kv.Get(ctx, prefix, clientv3.WithPrefix())
	if err != nil {
		return nil, 0, err
	}
	out, err := decodeAll[T](r.Kvs)
	return out, r.Header.Revision, err
}

type kv interface {
	GetKey() []byte
	GetValue() []byte
}

func decodeAll[T any, K kv](kvs []K) ([]T, error) {
	out := make([]T, 0, len(kvs))
	for _, kv := range kvs {
		var v T
		if err := json.Unmarshal(kv.GetValue(), &v); err != nil {
			return nil, fmt.Errorf("decode %s: %w", kv.GetKey(), err)
		}
		out = append(out, v)
	}
	return out, nil
}

func modRev(r *clientv3.GetResponse) int64 {
	if len(r.Kvs) == 0 {
		return 0
	}
	return r.Kvs[0].ModRevision
}

func addrToU32(a netip.Addr) uint32 {
	b := a.As4()
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

func u32ToAddr(v uint32) netip.Addr {
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}
