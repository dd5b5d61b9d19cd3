package egressagent

import (
	"context"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cni-genie/cni-genie/pkg/store/etcdstore"
)

// TestHeartbeats on a real embedded etcd: a beating gateway is alive for
// the other nodes, dead within its timeout after it stops beating (a
// crash), alive again when it is back; Changed fires on each transition.
func TestHeartbeats(t *testing.T) {
	e, err := etcdstore.StartEmbedded(context.Background(), etcdstore.EmbeddedConfig{DataDir: filepath.Join(t.TempDir(), "etcd")})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	open := func() *etcdstore.Store {
		st, err := etcdstore.New(t.Context(), e.Endpoints(), etcdstore.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		return st
	}
	const interval, timeout = 50 * time.Millisecond, 300 * time.Millisecond
	var beating atomic.Bool
	beating.Store(true)
	gwCtx, stopGW := context.WithCancel(t.Context())
	gw := &Heartbeats{Store: open(), Node: "gw", Beating: beating.Load, Interval: interval, Timeout: timeout}
	go gw.Run(gwCtx)
	obs := &Heartbeats{Store: open(), Node: "obs", Beating: func() bool { return false }, Interval: interval, Timeout: timeout}
	go obs.Run(t.Context())

	waitAlive := func(want bool, within time.Duration) time.Duration {
		t.Helper()
		start := time.Now()
		for time.Since(start) < within {
			if obs.Alive("gw") == want {
				return time.Since(start)
			}
			select {
			case <-obs.Changed():
			case <-time.After(10 * time.Millisecond):
			}
		}
		t.Fatalf("gw alive=%v not seen within %v", want, within)
		return 0
	}
	waitAlive(true, 5*time.Second)
	if !obs.Alive("obs") || obs.Alive("nobody") {
		t.Errorf("self must be alive, an unknown node dead")
	}
	stopGW() // the gateway crashes: no more beats, its record stays
	took := waitAlive(false, 2*time.Second)
	if took > timeout+200*time.Millisecond {
		t.Errorf("dead after %v, timeout %v", took, timeout)
	}
	gw2 := &Heartbeats{Store: open(), Node: "gw", Beating: beating.Load, Interval: interval, Timeout: timeout}
	ctx2, stop2 := context.WithCancel(t.Context())
	defer stop2()
	go gw2.Run(ctx2)
	waitAlive(true, 2*time.Second)
	beating.Store(false) // no longer a gateway: its record goes
	waitAlive(false, 2*time.Second)
}
