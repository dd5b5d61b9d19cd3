package kubestore

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	coordinationv1 "k8s.io/client-go/kubernetes/typed/coordination/v1"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"

	"github.com/cni-genie/cni-genie/pkg/store"
)

var _ store.LeaderElector = (*Store)(nil)

// defaultLeaseDuration is Options.LeaseDuration's default, client-go's
// usual controller setting (renew deadline 10s, retry 2s).
const defaultLeaseDuration = 15 * time.Second

// saNamespaceFile holds the namespace of the pod's service account.
const saNamespaceFile = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"

func (s *Store) leaseNamespace() string {
	if s.opts.LeaseNamespace != "" {
		return s.opts.LeaseNamespace
	}
	if b, err := os.ReadFile(saNamespaceFile); err == nil && strings.TrimSpace(string(b)) != "" {
		return strings.TrimSpace(string(b))
	}
	return "kube-system"
}

// Lead implements store.LeaderElector with client-go's leaderelection on
// a coordination.k8s.io Lease named "<scope>.<name>" ("genie-<name>"
// unscoped) in Options.LeaseNamespace. The leader renews every
// LeaseDuration/7 and gives up (cancelling run's context) when it could
// not renew for 2/3 of LeaseDuration, before another candidate may take
// an unrenewed Lease; a leader whose ctx ends releases the Lease, so the
// next takes over within a retry period. Run's return is awaited before
// campaigning again, so run never overlaps itself on one candidate.
func (s *Store) Lead(ctx context.Context, name, id string, run func(context.Context)) error {
	coord, err := coordinationv1.NewForConfigAndClient(s.cfg, s.hc)
	if err != nil {
		return fmt.Errorf("election %q: %w", name, err)
	}
	lease := "genie-" + name
	if s.scope != "" {
		lease = s.scope + "." + name
	}
	d := s.opts.LeaseDuration
	if d == 0 {
		d = defaultLeaseDuration
	}
	lock := &resourcelock.LeaseLock{
		LeaseMeta:  metav1.ObjectMeta{Namespace: s.leaseNamespace(), Name: lease},
		Client:     coord,
		LockConfig: resourcelock.ResourceLockConfig{Identity: id},
	}
	for ctx.Err() == nil {
		// leaderelection starts OnStartedLeading in a goroutine and
		// returns from Run without waiting for it: over marks the round
		// as finished, so a late start skips run.
		var mu sync.Mutex
		over, running := false, false
		done := make(chan struct{})
		rctx, cancel := context.WithCancel(ctx)
		le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
			Lock:            lock,
			LeaseDuration:   d,
			RenewDeadline:   d * 2 / 3,
			RetryPeriod:     d / 7,
			ReleaseOnCancel: true,
			Name:            lease,
			Callbacks: leaderelection.LeaderCallbacks{
				OnStartedLeading: func(lctx context.Context) {
					mu.Lock()
					if over {
						mu.Unlock()
						return
					}
					running = true
					mu.Unlock()
					defer close(done)
					run(lctx)
					cancel() // run is over: release, campaign again

				},
				OnStoppedLeading: func() {},
			},
		})
		if err != nil {
			cancel()
			return fmt.Errorf("election %q: %w", name, err)
		}
		le.Run(rctx) // returns once leadership is lost or ctx ends
		cancel()
		mu.Lock()
		over = true
		wait := running
		mu.Unlock()
		if wait {
			<-done
		}
	}
	return ctx.Err()
}
