package kubestore_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cni-genie/cni-genie/pkg/store"
	"github.com/cni-genie/cni-genie/pkg/store/kubestore"
	"github.com/cni-genie/cni-genie/pkg/store/storetest"
	"github.com/cni-genie/cni-genie/pkg/testutil/kubeapi"
	"github.com/cni-genie/cni-genie/pkg/vpc"
)

// tcpProxy forwards loopback connections to one backend at a time, as a
// load balancer in front of an HA pair of API servers does.
type tcpProxy struct {
	l       net.Listener
	backend atomic.Value // "host:port"
	mu      sync.Mutex
	conns   map[net.Conn]bool
}

func newProxy(t *testing.T, backend string) *tcpProxy {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &tcpProxy{l: l, conns: map[net.Conn]bool{}}
	p.backend.Store(backend)
	t.Cleanup(func() { l.Close(); p.cut() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go p.serve(c)
		}
	}()
	return p
}

func (p *tcpProxy) serve(c net.Conn) {
	b, err := net.Dial("tcp", p.backend.Load().(string))
	if err != nil {
		c.Close()
		return
	}
	p.mu.Lock()
	p.conns[c], p.conns[b] = true, true
	p.mu.Unlock()
	go func() { io.Copy(b, c); b.Close() }()
	io.Copy(c, b)
	c.Close()
	p.mu.Lock()
	delete(p.conns, c)
	delete(p.conns, b)
	p.mu.Unlock()
}

// switchTo sends new connections to backend and cuts the open ones.
func (p *tcpProxy) switchTo(backend string) {
	p.backend.Store(backend)
	p.cut()
}

func (p *tcpProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		c.Close()
	}
}

func hostOf(t *testing.T, u string) string {
	pu, err := url.Parse(u)
	if err != nil {
		t.Fatal(err)
	}
	return pu.Host
}

// countLists counts the list requests (GETs of a collection that are not
// watches) a client sends for genie resources.
type countLists struct {
	base http.RoundTripper
	n    *atomic.Int32
}

func (c countLists) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/apis/"+kubestore.Group+"/") &&
		r.URL.Query().Get("watch") != "true" && strings.Count(strings.TrimPrefix(r.URL.Path, "/apis/"+kubestore.Group+"/"), "/") == 1 {
		c.n.Add(1)
	}
	return c.base.RoundTrip(r)
}

// A rolling restart of the API server during a watch: the watching
// client reaches the API servers through a load balancer; one of the pair
// is restarted (its connections cut, the balancer sends new ones to the
// other) while a node changes. The watch resumes through client-go's
// RetryWatcher from the last revision it saw (bookmarks keep it fresh),
// delivers the change made while it was cut off, and neither lists again
// nor reports an error. (A lone API server that restarts starts its watch
// cache at the current revision, so a watch from before can only get
// ErrCompacted there: TestWatchAcrossAPIServerRestart.)
func TestWatchResumesAcrossAPIServerRestart(t *testing.T) {
	srv := kubeapi.New(t, kubeapi.Options{Logf: t.Logf})
	ctx := t.Context()
	if err := srv.InstallProjectCRDs(ctx, kubestore.CRDFiles...); err != nil {
		t.Fatal(err)
	}
	peer, err := srv.StartPeer(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Stop()
	lb := newProxy(t, hostOf(t, srv.URL))

	var lists atomic.Int32
	cfg := srv.RESTConfig()
	cfg.Host = "https://" + lb.l.Addr().String()
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper { return countLists{base: rt, n: &lists} })
	watcher := open(t, cfg, "")
	writerA := open(t, srv.RESTConfig(), "")
	peerCfg := srv.RESTConfig()
	peerCfg.Host = peer.URL
	writerB := open(t, peerCfg, "")

	_, rev, err := watcher.ListNodes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	events := watcher.WatchNodes(wctx, rev)
	listed := lists.Load()
	next := func(want string) {
		t.Helper()
		select {
		case ev, ok := <-events:
			if !ok || ev.Type != store.EventPut || ev.Node.Name != want {
				t.Fatalf("event %+v (open %v), want put of %s", ev, ok, want)
			}
		case <-time.After(storetest.EventTimeout):
			t.Fatalf("no event for %s", want)
		}
	}
	storetest.RegisterNodes(t, writerA, "n1")
	next("n1")

	lb.switchTo(hostOf(t, peer.URL))
	restarted := make(chan error, 1)
	go func() { restarted <- srv.Restart() }()
	if err := writerB.RegisterNode(ctx, vpc.Node{Name: "n2", UnderlayIP: netipAddr("192.0.2.2")}); err != nil {
		t.Fatal(err)
	}
	next("n2")
	if err := <-restarted; err != nil {
		t.Fatal(err)
	}
	if err := writerA.RegisterNode(ctx, vpc.Node{Name: "n3", UnderlayIP: netipAddr("192.0.2.3")}); err != nil {
		t.Fatal(err)
	}
	next("n3")
	if n := lists.Load() - listed; n != 0 {
		t.Errorf("the watch listed %d time(s) across the restart, want none", n)
	}
	select {
	case ev := <-events:
		t.Errorf("unexpected event after the restart: %+v", ev)
	default:
	}
	if errors.Is(ctx.Err(), context.Canceled) {
		t.Fatal("test context ended")
	}
}

func netipAddr(s string) netip.Addr { return netip.MustParseAddr(s) }
