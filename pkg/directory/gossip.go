package directory

import (
	"encoding/json"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// FastLANConfig returns memberlist's LAN configuration tuned to declare a
// crashed node dead in about a second (doc.go explains each value, its
// trade-off and its bandwidth). memberlist's own DefaultLANConfig takes
// 12-72 s at 100-1,000 nodes.
func FastLANConfig() *memberlist.Config {
	c := memberlist.DefaultLANConfig()
	c.ProbeInterval = 200 * time.Millisecond // default 1 s
	c.ProbeTimeout = 100 * time.Millisecond  // default 500 ms
	c.SuspicionMult = 2                      // default 4
	c.SuspicionMaxTimeoutMult = 4            // default 6; unused while SuspicionMult is 2
	c.GossipInterval = 50 * time.Millisecond // default 200 ms
	c.GossipNodes = 4                        // default 3
	c.GossipToTheDeadTime = 5 * time.Second  // default 30 s
	c.TCPTimeout = 2 * time.Second           // default 10 s
	return c
}

// GossipConfig configures a Gossip.
type GossipConfig struct {
	// Name is the node's unique name (the directory member name).
	Name string
	// BindAddr and BindPort are the underlay address memberlist listens
	// on (UDP and TCP); port 0 picks a free one.
	BindAddr string
	BindPort int
	// RPC is the underlay address of this node's directory RPC server,
	// published to the others as node metadata.
	RPC netip.AddrPort
	// Seeds are host:port addresses of existing members to join through;
	// none starts a new cluster.
	Seeds []string
	// Memberlist is the base memberlist configuration; nil means
	// FastLANConfig(). Name, bind address, delegates and logger are set
	// from the fields above.
	Memberlist *memberlist.Config
	// OnChange is called, from one goroutine, with the live members
	// (including this node) after every change.
	OnChange func([]Member)
	// Logger receives memberlist's logs at debug level; nil drops them.
	Logger *slog.Logger
}

// nodeMeta is what a node publishes through memberlist's NodeMeta.
type nodeMeta struct {
	RPC netip.AddrPort `json:"rpc"`
}

// Gossip is this node's membership: a memberlist instance whose live
// members, with their RPC addresses, feed the directory's placement.
type Gossip struct {
	ml *memberlist.Memberlist
	// live is this node's view, maintained from the event callbacks
	// (memberlist calls them under its lock, the only safe time to read
	// a *memberlist.Node: Members() hands out pointers it keeps writing).
	addr     string
	liveMu   sync.Mutex
	live     map[string]Member
	meta     []byte
	onChange func([]Member)
	changed  chan struct{}
	done     chan struct{}
	wg       sync.WaitGroup
	stopOnce sync.Once
}

// delegate implements memberlist.Delegate and memberlist.EventDelegate.
// memberlist calls events under its node lock, so they only signal.
type delegate struct{ g *Gossip }

func (d delegate) NodeMeta(limit int) []byte {
	if len(d.g.meta) > limit {
		return nil
	}
	return d.g.meta
}
func (delegate) NotifyMsg([]byte)                  {}
func (delegate) GetBroadcasts(int, int) [][]byte   { return nil }
func (delegate) LocalState(bool) []byte            { return nil }
func (delegate) MergeRemoteState([]byte, bool)     {}
func (d delegate) NotifyJoin(n *memberlist.Node)   { d.g.update(n, true) }
func (d delegate) NotifyLeave(n *memberlist.Node)  { d.g.update(n, false) }
func (d delegate) NotifyUpdate(n *memberlist.Node) { d.g.update(n, true) }
func (g *Gossip) signal()                          { trySignal(g.changed) }
func trySignal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// update records a member's join, update or leave and signals the loop.
func (g *Gossip) update(n *memberlist.Node, alive bool) {
	g.liveMu.Lock()
	var m nodeMeta
	switch {
	case !alive:
		delete(g.live, n.Name)
	case json.Unmarshal(n.Meta, &m) == nil:
		g.live[n.Name] = Member{Name: n.Name, RPC: m.RPC}
	default:
		delete(g.live, n.Name) // no usable metadata: not a directory member
	}
	g.liveMu.Unlock()
	g.signal()
}

// JoinGossip starts memberlist and joins the seeds.
func JoinGossip(cfg GossipConfig) (*Gossip, error) {
	meta, err := json.Marshal(nodeMeta{RPC: cfg.RPC})
	if err != nil {
		return nil, fmt.Errorf("gossip %s: encoding metadata: %w", cfg.Name, err)
	}
	g := &Gossip{meta: meta, live: map[string]Member{}, onChange: cfg.OnChange, changed: make(chan struct{}, 1), done: make(chan struct{})}
	mc := cfg.Memberlist
	if mc == nil {
		mc = FastLANConfig()
	}
	mc.Name = cfg.Name
	mc.BindAddr, mc.BindPort = cfg.BindAddr, cfg.BindPort
	mc.AdvertiseAddr, mc.AdvertisePort = "", 0
	mc.Delegate, mc.Events = delegate{g}, delegate{g}
	mc.LogOutput = nil
	if cfg.Logger != nil {
		mc.Logger = slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelDebug)
	} else {
		mc.Logger = log.New(io.Discard, "", 0)
	}
	ml, err := memberlist.Create(mc)
	if err != nil {
		return nil, fmt.Errorf("gossip %s: starting memberlist on %s:%d: %w", cfg.Name, cfg.BindAddr, cfg.BindPort, err)
	}
	g.ml = ml
	// Read once, before any peer can make memberlist rewrite the node.
	ln := ml.LocalNode()
	g.addr = net.JoinHostPort(ln.Addr.String(), strconv.Itoa(int(ln.Port)))
	if len(cfg.Seeds) > 0 {
		if _, err := ml.Join(cfg.Seeds); err != nil {
			ml.Shutdown()
			return nil, fmt.Errorf("gossip %s: joining %s: %w", cfg.Name, strings.Join(cfg.Seeds, ","), err)
		}
	}
	g.wg.Add(1)
	go g.loop()
	g.signal()
	return g, nil
}

func (g *Gossip) loop() {
	defer g.wg.Done()
	for {
		select {
		case <-g.done:
			return
		case <-g.changed:
			if g.onChange != nil {
				g.onChange(g.Members())
			}
		}
	}
}

// Members returns the live members with a valid RPC address, sorted by
// name.
func (g *Gossip) Members() []Member {
	g.liveMu.Lock()
	out := make([]Member, 0, len(g.live))
	for _, m := range g.live {
		out = append(out, m)
	}
	g.liveMu.Unlock()
	slices.SortFunc(out, func(a, b Member) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// Addr returns memberlist's host:port, for other nodes' Seeds.
func (g *Gossip) Addr() string { return g.addr }

// Leave tells the others this node is leaving (they drop it at once)
// and stops.
func (g *Gossip) Leave(timeout time.Duration) error {
	err := g.ml.Leave(timeout)
	g.Shutdown()
	return err
}

// Shutdown stops memberlist without leaving: to the others the node
// crashed, and they detect it by probing.
func (g *Gossip) Shutdown() {
	g.stopOnce.Do(func() {
		g.ml.Shutdown()
		close(g.done)
		g.wg.Wait()
	})
}

// Join joins the members at seeds (host:port), for a node that started
// alone (its seeds were down) or whose cluster split: two memberlist
// clusters never merge unless one joins the other. It returns how many
// seeds it reached.
func (g *Gossip) Join(seeds []string) (int, error) {
	n, err := g.ml.Join(seeds)
	if err != nil && n == 0 {
		return 0, fmt.Errorf("gossip: joining %s: %w", strings.Join(seeds, ","), err)
	}
	return n, nil
}

// Alive reports whether the named node is a live member in this node's
// view (memberlist's failure detector: a crashed node stops being alive
// within about a second, see FastLANConfig).
func (g *Gossip) Alive(name string) bool {
	g.liveMu.Lock()
	defer g.liveMu.Unlock()
	_, ok := g.live[name]
	return ok
}

// Liveness is node liveness from the directory's membership, for features
// that must react to node failure (the egress gateway's health, a service
// backend's node): Alive answers from the current view, Subscribe calls f
// with the live member names after every membership change (from one
// goroutine; f must not block) until the returned cancel is called.
type Liveness interface {
	Alive(node string) bool
	Subscribe(f func(live []string)) (cancel func())
}
