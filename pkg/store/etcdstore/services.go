package etcdstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/cni-genie/cni-genie/pkg/service"
	"github.com/cni-genie/cni-genie/pkg/store"
	"github.com/cni-genie/cni-genie/pkg/vpc"
)

var _ store.ServiceStore = (*Store)(nil)

// Services live below /services/<vpc>/: "<name>/spec" holds the Service,
// "<name>/backends" its resolved Backends (names are DNS labels, no "/").
const (
	svcSpec     = "/spec"
	svcBackends = "/backends"
)

func (s *Store) servicesPrefix(v string) string {
	if v == "" {
		return s.prefix + "/services/"
	}
	return s.prefix + "/services/" + v + "/"
}
func (s *Store) serviceKey(v, n string) string  { return s.servicesPrefix(v) + n + svcSpec }
func (s *Store) backendsKey(v, n string) string { return s.servicesPrefix(v) + n + svcBackends }

// CreateService implements store.ServiceStore.
func (s *Store) CreateService(ctx context.Context, sv service.Service) (service.Service, error) {
	what := fmt.Sprintf("create service %q", sv.Key())
	sv = sv.WithDefaults()
	if err := sv.Validate(); err != nil {
		return service.Service{}, fmt.Errorf("%s: %w", what, err)
	}
	try := store.NewRetrier(what)
	for try.Next(ctx) {
		rs, rev, err := s.read(ctx,
			clientv3.OpGet(s.vpcKey(sv.VPC)),
			clientv3.OpGet(s.subnetsPrefix(sv.VPC), clientv3.WithPrefix()),
			clientv3.OpGet(s.servicesPrefix(sv.VPC), clientv3.WithPrefix()))
		if err != nil {
			return service.Service{}, fmt.Errorf("%s: %w", what, err)
		}
		if len(rs[0].Kvs) == 0 {
			return service.Service{}, noVPC(what, sv.VPC)
		}
		var parent vpc.VPC
		if err := json.Unmarshal(rs[0].Kvs[0].Value, &parent); err != nil {
			return service.Service{}, fmt.Errorf("%s: decode vpc: %w", what, err)
		}
		subnets, err := decodeAll[vpc.Subnet](rs[1].Kvs)
		if err != nil {
			return service.Service{}, fmt.Errorf("%s: %w", what, err)
		}
		var others []service.Service
		for _, kv := range rs[2].Kvs {
			if !strings.HasSuffix(string(kv.Key), svcSpec) {
				continue
			}
			var o service.Service
			if err := json.Unmarshal(kv.Value, &o); err != nil {
				return service.Service{}, fmt.Errorf("%s: decode %s: %w", what, kv.Key, err)
			}
			if o.Name == sv.Name {
				return service.Service{}, fmt.Errorf("%s: %w", what, store.ErrExists)
			}
			others = append(others, o)
		}
		out := sv
		if !out.VIP.IsValid() {
			if out.VIP, err = service.AllocateVIP(parent.CIDR, subnets, others); err != nil {
				return service.Service{}, fmt.Errorf("%s: %w", what, serviceErr(err))
			}
		}
		if err := service.Check(out, parent, subnets, others); err != nil {
			return service.Service{}, fmt.Errorf("%s: %w", what, serviceErr(err))
		}
		b, _ := json.Marshal(out)
		resp, err := s.cli.Txn(ctx).If(
			clientv3.Compare(clientv3.CreateRevision(s.vpcKey(sv.VPC)), "=", rs[0].Kvs[0].CreateRevision),
			// No subnet or service of the VPC changed since the checks.
			clientv3.Compare(clientv3.ModRevision(s.subnetsPrefix(sv.VPC)).WithPrefix(), "<", rev+1),
			clientv3.Compare(clientv3.ModRevision(s.servicesPrefix(sv.VPC)).WithPrefix(), "<", rev+1),
		).Then(clientv3.OpPut(s.serviceKey(sv.VPC, sv.Name), string(b))).Commit()
		if err != nil {
			return service.Service{}, fmt.Errorf("%s: %w", what, err)
		}
		if resp.Succeeded {
			return out, nil
		}
	}
	return service.Service{}, try.Err()
}

// checkSubnetVIPs refuses subnet sn if it covers the VIP of a service in
// kvs (a read of the VPC's services prefix).
func (s *Store) checkSubnetVIPs(sn vpc.Subnet, kvs []*mvccpb.KeyValue) error {
	var svcs []service.Service
	for _, kv := range kvs {
		if !strings.HasSuffix(string(kv.Key), svcSpec) {
			continue
		}
		var o service.Service
		if err := json.Unmarshal(kv.Value, &o); err != nil {
			return fmt.Errorf("decode %s: %w", kv.Key, err)
		}
		svcs = append(svcs, o)
	}
	return serviceErr(service.CheckSubnet(sn, svcs))
}

// serviceErr maps service.ErrConflict to store.ErrConflict.
func serviceErr(err error) error {
	if errors.Is(err, service.ErrConflict) {
		return fmt.Errorf("%w: %w", err, store.ErrConflict)
	}
	return err
}

// GetService implements store.ServiceStore.
func (s *Store) GetService(ctx context.Context, vpcName, name string) (service.Service, error) {
	var out service.Service
	if err := s.get(ctx, s.serviceKey(vpcName, name), &out); err != nil {
		return service.Service{}, fmt.Errorf("get service %q: %w", vpcName+"/"+name, err)
	}
	return out, nil
}

// ListServices implements store.ServiceStore.
func (s *Store) ListServices(ctx context.Context, vpcName string) ([]service.Service, int64, error) {
	out, rev, err := listSuffix[service.Service](ctx, s, s.servicesPrefix(vpcName), svcSpec)
	if err != nil {
		return nil, 0, fmt.Errorf("list services of vpc %q: %w", vpcName, err)
	}
	slices.SortFunc(out, func(a, b service.Service) int { return strings.Compare(a.Key(), b.Key()) })
	return out, rev, nil
}

// DeleteService implements store.ServiceStore.
func (s *Store) DeleteService(ctx context.Context, vpcName, name string) error {
	what := fmt.Sprintf("delete service %q", vpcName+"/"+name)
	resp, err := s.cli.Txn(ctx).If(
		clientv3.Compare(clientv3.CreateRevision(s.serviceKey(vpcName, name)), ">", 0),
	).Then(
		clientv3.OpDelete(s.serviceKey(vpcName, name)),
		clientv3.OpDelete(s.backendsKey(vpcName, name)),
	).Commit()
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if !resp.Succeeded {
		return fmt.Errorf("%s: %w", what, store.ErrNotFound)
	}
	return nil
}

// PutServiceBackends implements store.ServiceStore.
func (s *Store) PutServiceBackends(ctx context.Context, b service.Backends) error {
	what := fmt.Sprintf("put backends of service %q", b.Key())
	v, _ := json.Marshal(b)
	resp, err := s.cli.Txn(ctx).If(
		clientv3.Compare(clientv3.CreateRevision(s.serviceKey(b.VPC, b.Service)), ">", 0),
	).Then(clientv3.OpPut(s.backendsKey(b.VPC, b.Service), string(v))).Commit()
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if !resp.Succeeded {
		return fmt.Errorf("%s: service %q: %w", what, b.Key(), store.ErrNotFound)
	}
	return nil
}

// ListServiceBackends implements store.ServiceStore.
func (s *Store) ListServiceBackends(ctx context.Context, vpcName string) ([]service.Backends, int64, error) {
	out, rev, err := listSuffix[service.Backends](ctx, s, s.servicesPrefix(vpcName), svcBackends)
	if err != nil {
		return nil, 0, fmt.Errorf("list service backends of vpc %q: %w", vpcName, err)
	}
	slices.SortFunc(out, func(a, b service.Backends) int { return strings.Compare(a.Key(), b.Key()) })
	return out, rev, nil
}

// WatchServices implements store.ServiceStore.
func (s *Store) WatchServices(ctx context.Context, vpcName string, fromRevision int64) <-chan store.ServiceEvent {
	ch := make(chan store.ServiceEvent)
	go watch(ctx, s, s.servicesPrefix(vpcName), fromRevision, fmt.Sprintf("watch services of vpc %q", vpcName), func(ev rawEvent) (store.ServiceEvent, bool) {
		out := store.ServiceEvent{Type: ev.typ, Revision: ev.rev, Err: ev.err}
		if ev.typ == store.EventError {
			return out, true
		}
		// ev.name is "[<vpc>/]<name>/spec" or ".../backends".
		path := ev.name
		if vpcName != "" {
			path = vpcName + "/" + path
		}
		v, rest, _ := strings.Cut(path, "/")
		name, kind, _ := strings.Cut(rest, "/")
		val := ev.value
		if ev.typ == store.EventDelete {
			val = ev.prev
		}
		switch "/" + kind {
		case svcSpec:
			sv := service.Service{VPC: v, Name: name}
			if val != nil && json.Unmarshal(val, &sv) != nil && ev.typ == store.EventPut {
				return out, false
			}
			out.Service = &sv
		case svcBackends:
			b := service.Backends{VPC: v, Service: name}
			if val != nil && json.Unmarshal(val, &b) != nil && ev.typ == store.EventPut {
				return out, false
			}
			out.Backends = &b
		default:
			return out, false
		}
		return out, true
	}, ch)
	return ch
}

// listSuffix lists the objects below prefix whose keys end in suffix.
func listSuffix[T any](ctx context.Context, s *Store, prefix, suffix string) ([]T, int64, error) {
	r, err := s.cli.Get(ctx, prefix, clientv3.WithPrefix())
	if err != nil {
		return nil, 0, err
	}
	kvs := slices.DeleteFunc(slices.Clone(r.Kvs), func(kv *mvccpb.KeyValue) bool { return !strings.HasSuffix(string(kv.Key), suffix) })
	out, err := decodeAll[T](kvs)
	return out, r.Header.Revision, err
}

var _ store.LeaderElector = (*Store)(nil)

// electionTTL is the session lease of a leadership: a crashed leader is
// replaced after at most this many seconds.
const electionTTL = 10

// Lead implements store.LeaderElector with a clientv3/concurrency election
// under <prefix>/elections/<name>.
func (s *Store) Lead(ctx context.Context, name, id string, run func(context.Context)) error {
	for ctx.Err() == nil {
		if err := s.leadOnce(ctx, name, id, run); err != nil && ctx.Err() == nil {
			// The session or the campaign failed (etcd unreachable):
			// retry after a pause, like a lost leadership.
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
		}
	}
	return ctx.Err()
}

func (s *Store) leadOnce(ctx context.Context, name, id string, run func(context.Context)) error {
	sess, err := concurrency.NewSession(s.cli, concurrency.WithTTL(electionTTL), concurrency.WithContext(ctx))
	if err != nil {
		return fmt.Errorf("election %q: session: %w", name, err)
	}
	defer sess.Close()
	e := concurrency.NewElection(sess, s.prefix+"/elections/"+name)
	if err := e.Campaign(ctx, id); err != nil {
		return fmt.Errorf("election %q: campaign: %w", name, err)
	}
	lctx, cancel := context.WithCancel(ctx)
	go func() {
		select {
		case <-sess.Done(): // lease lost: someone else may lead now
			cancel()
		case <-lctx.Done():
		}
	}()
	run(lctx)
	cancel()
	rctx, rcancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer rcancel()
	_ = e.Resign(rctx)
	return nil
}
