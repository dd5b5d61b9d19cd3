package etcdstore

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/cni-genie/cni-genie/pkg/store"
)

// rawEvent is a decoded-enough etcd event handed to a typed converter.
type rawEvent struct {
	typ   store.EventType
	rev   int64
	name  string // key below the watched prefix
	value []byte
	prev  []byte // previous value of a deleted key, if known
	err   error
}

// watch streams the changes below prefix after fromRevision into ch,
// converting each with conv, until ctx ends. A failure is sent as one
// EventError; ch is closed on return.
func watch[E any](ctx context.Context, s *Store, prefix string, fromRevision int64, what string, conv func(rawEvent) (E, bool), ch chan<- E) {
	defer close(ch)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	opts := []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithPrevKV()}
	if fromRevision > 0 {
		opts = append(opts, clientv3.WithRev(fromRevision+1))
	}
	send := func(e E) bool {
		select {
		case ch <- e:
			return true
		case <-ctx.Done():
			return false
		}
	}
	fail := func(err error) {
		if e, ok := conv(rawEvent{typ: store.EventError, err: fmt.Errorf("%s: %w", what, err)}); ok {
			send(e)
		}
	}
	// Require a leader so a partitioned member fails the watch instead of
	// going silent.
	for wr := range s.cli.Watch(clientv3.WithRequireLeader(ctx), prefix, opts...) {
		if ctx.Err() != nil {
			return
		}
		if wr.CompactRevision != 0 {
			fail(fmt.Errorf("revision %d compacted (oldest kept %d): %w", fromRevision, wr.CompactRevision, store.ErrCompacted))
			return
		}
		if err := wr.Err(); err != nil {
			fail(err)
			return
		}
		for _, ev := range wr.Events {
			re := rawEvent{rev: ev.Kv.ModRevision, name: strings.TrimPrefix(string(ev.Kv.Key), prefix)}
			switch ev.Type {
			case mvccpb.PUT:
				re.typ, re.value = store.EventPut, ev.Kv.Value
			case mvccpb.DELETE:
				re.typ = store.EventDelete
				if ev.PrevKv != nil {
					re.prev = ev.PrevKv.Value
				}
			default:
				continue
			}
			e, ok := conv(re)
			if !ok {
				fail(fmt.Errorf("decode %s%s at revision %d", prefix, re.name, re.rev))
				return
			}
			if !send(e) {
				return
			}
		}
	}
	if ctx.Err() == nil {
		fail(errors.New("watch channel closed (client closed?)"))
	}
}
