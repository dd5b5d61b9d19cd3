package etcdstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/cni-genie/cni-genie/pkg/egress"
	"github.com/cni-genie/cni-genie/pkg/store"
	"github.com/cni-genie/cni-genie/pkg/vpc"
)

var (
	_ store.EgressStore = (*Store)(nil)
	_ store.BeatStore   = (*Store)(nil)
)

// Egress gateways live at /egress/<vpc>/<name>; heartbeats at
// /beats/<node> (the time of the beat, for people: watchers use the
// arrival of the event).
func (s *Store) egressPrefix(v string) string {
	if v == "" {
		return s.prefix + "/egress/"
	}
	return s.prefix + "/egress/" + v + "/"
}
func (s *Store) egressKey(v, n string) string { return s.egressPrefix(v) + n }
func (s *Store) beatsPrefix() string          { return s.prefix + "/beats/" }

// egressErr maps egress.ErrConflict and ErrUnknown to the store's errors.
func egressErr(err error) error {
	switch {
	case errors.Is(err, egress.ErrConflict):
		return fmt.Errorf("%w: %w", err, store.ErrConflict)
	case errors.Is(err, egress.ErrUnknown):
		return fmt.Errorf("%w: %w", err, store.ErrNotFound)
	}
	return err
}

// CreateEgressGateway implements store.EgressStore.
func (s *Store) CreateEgressGateway(ctx context.Context, g egress.Gateway) (egress.Gateway, error) {
	return s.putEgress(ctx, fmt.Sprintf("create %s", g), g, false)
}

// UpdateEgressGateway implements store.EgressStore.
func (s *Store) UpdateEgressGateway(ctx context.Context, g egress.Gateway) (egress.Gateway, error) {
	return s.putEgress(ctx, fmt.Sprintf("update %s", g), g, true)
}

// putEgress checks g against the VPC, the nodes and the VPC's other
// gateways read at one revision, and writes it if none of them changed
// since (and the gateway exists iff update).
func (s *Store) putEgress(ctx context.Context, what string, g egress.Gateway, update bool) (egress.Gateway, error) {
	g = g.WithDefaults()
	if err := g.Validate(); err != nil {
		return egress.Gateway{}, fmt.Errorf("%s: %w", what, err)
	}
	try := store.NewRetrier(what)
	for try.Next(ctx) {
		rs, rev, err := s.read(ctx,
			clientv3.OpGet(s.vpcKey(g.VPC)),
			clientv3.OpGet(s.nodesPrefix(), clientv3.WithPrefix()),
			clientv3.OpGet(s.egressPrefix(g.VPC), clientv3.WithPrefix()))
		if err != nil {
			return egress.Gateway{}, fmt.Errorf("%s: %w", what, err)
		}
		if len(rs[0].Kvs) == 0 {
			return egress.Gateway{}, noVPC(what, g.VPC)
		}
		var parent vpc.VPC
		if err := json.Unmarshal(rs[0].Kvs[0].Value, &parent); err != nil {
			return egress.Gateway{}, fmt.Errorf("%s: decode vpc: %w", what, err)
		}
		nodes, err := decodeAll[vpc.Node](rs[1].Kvs)
		if err != nil {
			return egress.Gateway{}, fmt.Errorf("%s: %w", what, err)
		}
		others, err := decodeAll[egress.Gateway](rs[2].Kvs)
		if err != nil {
			return egress.Gateway{}, fmt.Errorf("%s: %w", what, err)
		}
		exists := slices.ContainsFunc(others, func(o egress.Gateway) bool { return o.Name == g.Name })
		if exists && !update {
			return egress.Gateway{}, fmt.Errorf("%s: %w", what, store.ErrExists)
		}
		if !exists && update {
			return egress.Gateway{}, fmt.Errorf("%s: %w", what, store.ErrNotFound)
		}
		if err := egress.Check(g, parent, nodes, others); err != nil {
			return egress.Gateway{}, fmt.Errorf("%s: %w", what, egressErr(err))
		}
		b, _ := json.Marshal(g)
		resp, err := s.cli.Txn(ctx).If(
			clientv3.Compare(clientv3.CreateRevision(s.vpcKey(g.VPC)), "=", rs[0].Kvs[0].CreateRevision),
			clientv3.Compare(clientv3.ModRevision(s.nodesPrefix()).WithPrefix(), "<", rev+1),
			clientv3.Compare(clientv3.ModRevision(s.egressPrefix(g.VPC)).WithPrefix(), "<", rev+1),
		).Then(clientv3.OpPut(s.egressKey(g.VPC, g.Name), string(b))).Commit()
		if err != nil {
			return egress.Gateway{}, fmt.Errorf("%s: %w", what, err)
		}
		if resp.Succeeded {
			return g, nil
		}
	}
	return egress.Gateway{}, try.Err()
}

// GetEgressGateway implements store.EgressStore.
func (s *Store) GetEgressGateway(ctx context.Context, vpcName, name string) (egress.Gateway, error) {
	var out egress.Gateway
	if err := s.get(ctx, s.egressKey(vpcName, name), &out); err != nil {
		return egress.Gateway{}, fmt.Errorf("get egress gateway %q: %w", vpcName+"/"+name, err)
	}
	return out, nil
}

// ListEgressGateways implements store.EgressStore.
func (s *Store) ListEgressGateways(ctx context.Context, vpcName string) ([]egress.Gateway, int64, error) {
	out, rev, err := list[egress.Gateway](ctx, s, s.egressPrefix(vpcName))
	if err != nil {
		return nil, 0, fmt.Errorf("list egress gateways of vpc %q: %w", vpcName, err)
	}
	slices.SortFunc(out, func(a, b egress.Gateway) int { return strings.Compare(a.Key(), b.Key()) })
	return out, rev, nil
}

// DeleteEgressGateway implements store.EgressStore.
func (s *Store) DeleteEgressGateway(ctx context.Context, vpcName, name string) error {
	what := fmt.Sprintf("delete egress gateway %q", vpcName+"/"+name)
	resp, err := s.cli.Txn(ctx).If(
		clientv3.Compare(clientv3.CreateRevision(s.egressKey(vpcName, name)), ">", 0),
	).Then(clientv3.OpDelete(s.egressKey(vpcName, name))).Commit()
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if !resp.Succeeded {
		return fmt.Errorf("%s: %w", what, store.ErrNotFound)
	}
	return nil
}

// WatchEgressGateways implements store.EgressStore.
func (s *Store) WatchEgressGateways(ctx context.Context, fromRevision int64) <-chan store.EgressEvent {
	ch := make(chan store.EgressEvent)
	go watch(ctx, s, s.egressPrefix(""), fromRevision, "watch egress gateways", func(ev rawEvent) (store.EgressEvent, bool) {
		out := store.EgressEvent{Type: ev.typ, Revision: ev.rev, Err: ev.err}
		switch ev.typ {
		case store.EventPut:
			if err := json.Unmarshal(ev.value, &out.Gateway); err != nil {
				return out, false
			}
		case store.EventDelete:
			if ev.prev == nil || json.Unmarshal(ev.prev, &out.Gateway) != nil {
				v, n, _ := strings.Cut(ev.name, "/")
				out.Gateway = egress.Gateway{VPC: v, Name: n}
			}
		}
		return out, true
	}, ch)
	return ch
}

// Beat implements store.BeatStore.
func (s *Store) Beat(ctx context.Context, node string) error {
	if _, err := s.kv.Put(ctx, s.beatsPrefix()+node, time.Now().UTC().Format(time.RFC3339Nano)); err != nil {
		return fmt.Errorf("heartbeat of node %q: %w", node, err)
	}
	return nil
}

// ListBeats implements store.BeatStore.
func (s *Store) ListBeats(ctx context.Context) ([]store.Beat, int64, error) {
	r, err := s.kv.Get(ctx, s.beatsPrefix(), clientv3.WithPrefix())
	if err != nil {
		return nil, 0, fmt.Errorf("list heartbeats: %w", err)
	}
	out := make([]store.Beat, 0, len(r.Kvs))
	for _, kv := range r.Kvs {
		t, _ := time.Parse(time.RFC3339Nano, string(kv.Value))
		out = append(out, store.Beat{Node: strings.TrimPrefix(string(kv.Key), s.beatsPrefix()), Time: t})
	}
	return out, r.Header.Revision, nil
}

// WatchBeats implements store.BeatStore.
func (s *Store) WatchBeats(ctx context.Context, fromRevision int64) <-chan store.BeatEvent {
	ch := make(chan store.BeatEvent)
	go watch(ctx, s, s.beatsPrefix(), fromRevision, "watch heartbeats", func(ev rawEvent) (store.BeatEvent, bool) {
		return store.BeatEvent{Type: ev.typ, Node: ev.name, Revision: ev.rev, Err: ev.err}, true
	}, ch)
	return ch
}

// DeleteBeat implements store.BeatStore.
func (s *Store) DeleteBeat(ctx context.Context, node string) error {
	if _, err := s.kv.Delete(ctx, s.beatsPrefix()+node); err != nil {
		return fmt.Errorf("delete heartbeat of node %q: %w", node, err)
	}
	return nil
}
