package kubestore_test

import (
	"context"
	"errors"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cni-genie/cni-genie/pkg/store/kubestore"
)

// cutRT fails every request while cut is set: a node that lost the API
// server (it cannot renew, nor release, its Lease).
type cutRT struct {
	base http.RoundTripper
	cut  *atomic.Bool
}

func (c cutRT) RoundTrip(r *http.Request) (*http.Response, error) {
	if c.cut.Load() {
		return nil, errors.New("test: cut off from the api server")
	}
	return c.base.RoundTrip(r)
}

// term is one leadership term of a candidate: when it began and ended.
type term struct {
	who        string
	start, end time.Time
}

// candidate runs Lead as id until the returned stop is called, sending
// each term's start on started and the whole term on ended.
func candidate(t *testing.T, s *kubestore.Store, id string, started chan<- string, ended chan<- term) (stop func()) {
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		done <- s.Lead(ctx, "resolver", id, func(lctx context.Context) {
			tm := term{who: id, start: time.Now()}
			started <- id
			<-lctx.Done()
			tm.end = time.Now()
			ended <- tm
		})
	}()
	return func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Lead(%s) = %v, want context.Canceled", id, err)
		}
	}
}

// The Lease elector on a real API server, with the agents' RBAC
// (deploy/policy/rbac.yaml genie-agent): one leader at a time; a leader cut
// off from the API server gives up before a second candidate takes the
// Lease over (after LeaseDuration); a leader that stops releases it and
// the next takes over well within LeaseDuration.
func TestLeaseElectorFailover(t *testing.T) {
	srv := server(t)
	ns := agentNamespace(t, srv)
	cfg := srv.RESTConfigForToken(agentIdentity(t, srv, ns, ""))
	const lease = 4 * time.Second
	opts := kubestore.Options{Scope: scope(), LeaseNamespace: ns, LeaseDuration: lease}
	var cut atomic.Bool
	acfg := *cfg
	acfg.Wrap(func(rt http.RoundTripper) http.RoundTripper { return cutRT{base: rt, cut: &cut} })
	a, err := kubestore.NewForConfig(t.Context(), &acfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := kubestore.NewForConfig(t.Context(), cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()

	started := make(chan string, 4)
	ended := make(chan term, 4)
	wantStart := func(who string, within time.Duration) time.Time {
		t.Helper()
		select {
		case got := <-started:
			if got != who {
				t.Fatalf("%s leads, want %s", got, who)
			}
			return time.Now()
		case <-time.After(within):
			t.Fatalf("%s does not lead after %v", who, within)
		}
		return time.Time{}
	}
	stopA := candidate(t, a, "a", started, ended)
	wantStart("a", 10*time.Second)
	stopB := candidate(t, b, "b", started, ended)
	select {
	case who := <-started:
		t.Fatalf("%s leads while a holds the lease", who)
	case <-time.After(lease + time.Second):
	}

	// a loses the API server: it must end its term, then b takes over.
	cutAt := time.Now()
	cut.Store(true)
	bAt := wantStart("b", 3*lease)
	ta := <-ended
	if ta.who != "a" || !ta.end.Before(bAt) {
		t.Fatalf("term %+v did not end before b began at %v: two leaders", ta, bAt)
	}
	if took := bAt.Sub(cutAt); took < lease/2 {
		t.Errorf("b took over %v after a was cut off, before a's lease (%v) could expire", took, lease)
	}
	t.Logf("a cut off: a stepped down after %v, b led after %v", ta.end.Sub(cutAt), bAt.Sub(cutAt))

	// a reconnects and campaigns again; b stops and releases the lease.
	cut.Store(false)
	time.Sleep(lease / 4)
	stopAt := time.Now()
	stopB()
	if tb := <-ended; tb.who != "b" {
		t.Fatalf("ended %+v, want b's term", tb)
	}
	aAt := wantStart("a", 3*lease)
	// Unreleased, a would wait for expiry: lease minus up to two retry
	// periods (b's last renew, a's last look) after the stop.
	if took := aAt.Sub(stopAt); took >= lease/2 {
		t.Errorf("a took over %v after b stopped: the lease was not released (expiry is %v)", took, lease)
	} else {
		t.Logf("b stopped: a led after %v (released lease)", took)
	}
	stopA()
}
