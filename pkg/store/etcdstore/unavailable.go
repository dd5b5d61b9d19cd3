package etcdstore

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/cni-genie/cni-genie/pkg/store"
)

// availKV is the client's KV with every transport failure (no server
// answering before the deadline, no leader, connection refused) wrapped as
// store.ErrUnavailable naming the endpoints, so callers can tell "the
// store is down, try again later" from a refusal by the store's rules.
type availKV struct {
	clientv3.KV
	name string
}

func newAvailKV(cli *clientv3.Client) availKV {
	return availKV{KV: cli.KV, name: "etcd " + strings.Join(cli.Endpoints(), ",")}
}

func (k availKV) wrap(err error) error {
	if err == nil || !unavailable(err) {
		return err
	}
	return fmt.Errorf("%s: %w: %w", k.name, store.ErrUnavailable, err)
}

// unavailable reports whether err means that no etcd member served the
// request.
func unavailable(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, rpctypes.ErrNoLeader) ||
		errors.Is(err, rpctypes.ErrTimeout) || errors.Is(err, rpctypes.ErrTimeoutDueToLeaderFail) ||
		errors.Is(err, rpctypes.ErrTimeoutDueToConnectionLost) {
		return true
	}
	if s, ok := status.FromError(err); ok {
		switch s.Code() {
		case codes.Unavailable, codes.DeadlineExceeded:
			return true
		}
	}
	return false
}

func (k availKV) Get(ctx context.Context, key string, opts ...clientv3.OpOption) (*clientv3.GetResponse, error) {
	r, err := k.KV.Get(ctx, key, opts...)
	return r, k.wrap(err)
}

func (k availKV) Put(ctx context.Context, key, val string, opts ...clientv3.OpOption) (*clientv3.PutResponse, error) {
	r, err := k.KV.Put(ctx, key, val, opts...)
	return r, k.wrap(err)
}

func (k availKV) Delete(ctx context.Context, key string, opts ...clientv3.OpOption) (*clientv3.DeleteResponse, error) {
	r, err := k.KV.Delete(ctx, key, opts...)
	return r, k.wrap(err)
}

func (k availKV) Txn(ctx context.Context) clientv3.Txn {
	return availTxn{Txn: k.KV.Txn(ctx), kv: k}
}

type availTxn struct {
	clientv3.Txn
	kv availKV
}

func (t availTxn) If(cs ...clientv3.Cmp) clientv3.Txn {
	return availTxn{Txn: t.Txn.If(cs...), kv: t.kv}
}

func (t availTxn) Then(ops ...clientv3.Op) clientv3.Txn {
	return availTxn{Txn: t.Txn.Then(ops...), kv: t.kv}
}

func (t availTxn) Else(ops ...clientv3.Op) clientv3.Txn {
	return availTxn{Txn: t.Txn.Else(ops...), kv: t.kv}
}

func (t availTxn) Commit() (*clientv3.TxnResponse, error) {
	r, err := t.Txn.Commit()
	return r, t.kv.wrap(err)
}
