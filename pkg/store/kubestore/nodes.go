package kubestore

import (
	"context"
	"fmt"
	"slices"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/cni-genie/cni-genie/pkg/store"
	"github.com/cni-genie/cni-genie/pkg/vpc"
)

func nodeSpecOf(n vpc.Node) nodeSpec {
	sp := nodeSpec{Name: n.Name, UnderlayIP: n.UnderlayIP.String(), Uplink: n.Uplink, UplinkMTU: n.UplinkMTU, Labels: n.Labels}
	if len(n.UnderlayMAC) > 0 {
		sp.UnderlayMAC = n.UnderlayMAC.String()
	}
	return sp
}

// RegisterNode implements store.Store: create, or update with the
// resourceVersion read.
func (s *Store) RegisterNode(ctx context.Context, n vpc.Node) error {
	what := fmt.Sprintf("register node %q", n.Name)
	if err := n.Validate(); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	name := s.nodeName(n.Name)
	if len(name) > 253 {
		return fmt.Errorf("%s: object name %q is longer than 253 characters: %w", what, name, vpc.ErrInvalid)
	}
	try := store.NewRetrier(what)
	for try.Next(ctx) {
		o := &nodeObject{header: s.newHeader(resNode, name), Spec: nodeSpecOf(n)}
		_, err := create(ctx, s, resNode, o)
		if err == nil {
			return nil
		}
		if !apierrors.IsAlreadyExists(err) {
			return wrap(what, err)
		}
		cur, err := get[nodeObject](ctx, s, resNode, name)
		if apierrors.IsNotFound(err) {
			continue
		}
		if err != nil {
			return wrap(what, err)
		}
		if cur.Spec.equal(o.Spec) {
			return nil
		}
		cur.Spec = o.Spec
		_, err = update(ctx, s, resNode, cur, false)
		if apierrors.IsConflict(err) || apierrors.IsNotFound(err) {
			continue
		}
		if err != nil {
			return wrap(what, err)
		}
		return nil
	}
	return try.Err()
}

// GetNode implements store.Store.
func (s *Store) GetNode(ctx context.Context, name string) (vpc.Node, error) {
	what := fmt.Sprintf("get node %q", name)
	o, err := get[nodeObject](ctx, s, resNode, s.nodeName(name))
	if err != nil {
		return vpc.Node{}, wrap(what, err)
	}
	n, err := toNode(o)
	if err != nil {
		return vpc.Node{}, fmt.Errorf("%s: %w", what, err)
	}
	return n, nil
}

// ListNodes implements store.Store.
func (s *Store) ListNodes(ctx context.Context) ([]vpc.Node, int64, error) {
	objs, rv, err := list[nodeObject](ctx, s, resNode, s.selector(), 0)
	if err != nil {
		return nil, 0, wrap("list nodes", err)
	}
	rev, err := parseRV(rv)
	if err != nil {
		return nil, 0, fmt.Errorf("list nodes: %w", err)
	}
	out := make([]vpc.Node, 0, len(objs))
	for _, o := range objs {
		n, err := toNode(o)
		if err != nil {
			return nil, 0, fmt.Errorf("list nodes: %w", err)
		}
		out = append(out, n)
	}
	slices.SortFunc(out, func(a, b vpc.Node) int { return strings.Compare(a.Name, b.Name) })
	return out, rev, nil
}

// DeleteNode implements store.Store.
func (s *Store) DeleteNode(ctx context.Context, name string) error {
	err := s.ri(resNode).Delete(ctx, s.nodeName(name), deleteNow)
	if err != nil && !apierrors.IsNotFound(err) {
		return wrap(fmt.Sprintf("delete node %q", name), err)
	}
	return nil
}

// WatchNodes implements store.Store.
func (s *Store) WatchNodes(ctx context.Context, fromRevision int64) <-chan store.NodeEvent {
	ch := make(chan store.NodeEvent)
	go watch(ctx, s, resNode, s.selector(), fromRevision, "watch nodes", func(typ store.EventType, rev int64, o *nodeObject) (store.NodeEvent, error) {
		n, err := toNode(o)
		return store.NodeEvent{Type: typ, Node: n, Revision: rev}, err
	}, func(err error) store.NodeEvent {
		return store.NodeEvent{Type: store.EventError, Err: err}
	}, ch)
	return ch
}
