package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"

	"github.com/cni-genie/cni-genie/pkg/directory"
	"github.com/cni-genie/cni-genie/pkg/sandbox"
	"github.com/cni-genie/cni-genie/pkg/store"
)

// The endpoint directory seen from outside (geniectl directory, and the
// ring section of geniectl status): the CLI asks the members' directory
// RPC on the underlay (--directory-rpc-port) for their view of the ring
// and for records. In a sandbox it dials from inside a node's namespace.

// defaultDirectoryRPCPort is genied's --directory-rpc-port default
// (agent.DefaultDirectoryRPCPort; not imported, to keep the agent out of
// geniectl).
const defaultDirectoryRPCPort = 4790

// Dialer opens a TCP connection to a member's directory RPC.
type Dialer func(ctx context.Context, addr string) (net.Conn, error)

// DirectoryClient reaches the directory of a cluster: the store names the
// nodes, their underlay addresses and the port give the members' RPC.
type DirectoryClient struct {
	st   store.Store
	port int
	tr   *directory.GRPCTransport
}

// NewDirectoryClient returns a client; dial nil dials directly. Close it.
func NewDirectoryClient(st store.Store, port int, dial Dialer) *DirectoryClient {
	var opts []grpc.DialOption
	if dial != nil {
		opts = append(opts, grpc.WithContextDialer(dial))
	}
	return &DirectoryClient{st: st, port: port, tr: directory.NewGRPCTransport(opts...)}
}

// Close closes the connections.
func (c *DirectoryClient) Close() error { return c.tr.Close() }

// NodeRing is one node's answer to the Ring RPC (Err when it gave none).
type NodeRing struct {
	Node string                  `json:"node"`
	View *directory.RingResponse `json:"view,omitempty"`
	Err  string                  `json:"error,omitempty"`
}

// RingStatus aggregates the members' views.
type RingStatus struct {
	Shards   int        `json:"shards"`
	Replicas int        `json:"replicas"`
	Nodes    []NodeRing `json:"nodes"`
	// Members are the live members of the first answering node's view.
	Members []string `json:"members"`
	// ReplicasMissing counts, over all shards, the loaded copies short of
	// min(R, members): 0 when every shard has R loaded holders.
	ReplicasMissing int `json:"replicasMissing"`
	// Unheld are the shards no answering member holds loaded.
	Unheld int `json:"unheld"`
}

func (c *DirectoryClient) members(ctx context.Context) ([]directory.Member, error) {
	nodes, _, err := c.st.ListNodes(ctx)
	if err != nil {
		return nil, fmt.Errorf("directory: %w", err)
	}
	out := make([]directory.Member, 0, len(nodes))
	for _, n := range nodes {
		if n.UnderlayIP.Is4() {
			out = append(out, directory.Member{Name: n.Name, RPC: netip.AddrPortFrom(n.UnderlayIP, uint16(c.port))})
		}
	}
	return out, nil
}

// Ring asks every node of the store for its view of the ring (each within
// a second) and aggregates them.
func (c *DirectoryClient) Ring(ctx context.Context) (*RingStatus, error) {
	ms, err := c.members(ctx)
	if err != nil {
		return nil, err
	}
	out := &RingStatus{Nodes: make([]NodeRing, len(ms))}
	var wg sync.WaitGroup
	for i, m := range ms {
		wg.Add(1)
		go func() {
			defer wg.Done()
			actx, cancel := context.WithTimeout(ctx, time.Second)
			defer cancel()
			out.Nodes[i].Node = m.Name
			v, err := c.tr.Ring(actx, m)
			if err != nil {
				out.Nodes[i].Err = err.Error()
				return
			}
			out.Nodes[i].View = &v
		}()
	}
	wg.Wait()
	loaded := map[uint32]int{}
	for _, n := range out.Nodes {
		if n.View == nil {
			continue
		}
		if out.Shards == 0 {
			out.Shards, out.Replicas = n.View.Shards, n.View.Replicas
			for _, m := range n.View.Members {
				out.Members = append(out.Members, m.Name)
			}
		}
		for _, s := range n.View.Loaded {
			loaded[s]++
		}
	}
	if out.Shards == 0 {
		return out, errors.New("directory: no member answered")
	}
	want := min(out.Replicas, len(out.Members))
	for s := range uint32(out.Shards) {
		if n := loaded[s]; n < want {
			out.ReplicasMissing += want - n
			if n == 0 {
				out.Unheld++
			}
		}
	}
	return out, nil
}

// HolderAnswer is one holder's answer to a lookup.
type HolderAnswer struct {
	Node   string           `json:"node"`
	Status string           `json:"status"`
	Record directory.Record `json:"record,omitzero"`
	Took   time.Duration    `json:"took"`
}

// LookupResult says where an endpoint lives and which nodes hold it.
type LookupResult struct {
	Key   directory.Key `json:"key"`
	Shard uint32        `json:"shard"`
	// Holders answered in rank order.
	Holders []HolderAnswer `json:"holders"`
	// Record is the first found (by rank); Found says whether any was.
	Record directory.Record `json:"record,omitzero"`
	Found  bool             `json:"found"`
}

// Lookup asks every holder of the endpoint's shard (in the placement of
// the first answering member's view) for {vpc's VNI, ip}, without
// registering as a looker.
func (c *DirectoryClient) Lookup(ctx context.Context, vpcName string, ip netip.Addr) (*LookupResult, error) {
	v, err := c.st.GetVPC(ctx, vpcName)
	if err != nil {
		return nil, fmt.Errorf("directory lookup: %w", err)
	}
	k := directory.Key{VNI: v.VNI, IP: ip}
	if err := k.Validate(); err != nil {
		return nil, fmt.Errorf("directory lookup: %w", err)
	}
	ms, err := c.members(ctx)
	if err != nil {
		return nil, err
	}
	var view *directory.RingResponse
	for _, m := range ms {
		actx, cancel := context.WithTimeout(ctx, time.Second)
		r, err := c.tr.Ring(actx, m)
		cancel()
		if err == nil {
			view = &r
			break
		}
	}
	if view == nil {
		return nil, errors.New("directory lookup: no member answered")
	}
	p, err := directory.NewPlacement(view.Members, view.Shards, view.Replicas)
	if err != nil {
		return nil, fmt.Errorf("directory lookup: %w", err)
	}
	out := &LookupResult{Key: k, Shard: k.Shard(view.Shards)}
	for _, h := range p.Holders(out.Shard) {
		m := p.Member(h)
		actx, cancel := context.WithTimeout(ctx, directory.DefaultAttemptTimeout)
		start := time.Now()
		resp, err := c.tr.Lookup(actx, m, directory.LookupRequest{Key: k})
		cancel()
		a := HolderAnswer{Node: m.Name, Took: time.Since(start)}
		if err != nil {
			a.Status = "error: " + err.Error()
		} else {
			a.Status, a.Record = resp.Status.String(), resp.Record
			if resp.Status == directory.StatusFound && !out.Found {
				out.Record, out.Found = resp.Record, true
			}
		}
		out.Holders = append(out.Holders, a)
	}
	return out, nil
}

// directoryDialer is the dialer for the configured store: from inside the
// first node's namespace in a sandbox, else direct.
func (g *globals) directoryDialer() Dialer {
	if !g.sandboxStore() {
		return nil
	}
	sb, err := g.openSandbox()
	if err != nil || len(sb.Nodes()) == 0 {
		return nil
	}
	ns := sb.Nodes()[0].Netns
	return func(ctx context.Context, addr string) (net.Conn, error) {
		return sandbox.DialTCP(ctx, sandbox.Endpoint{Netns: ns}, addr)
	}
}

func directoryCommand(g *globals) *cobra.Command {
	var port int
	var asJSON bool
	c := &cobra.Command{
		Use:   "directory",
		Short: "The endpoint directory (--endpoint-mode directory): ring, lookups, backfill",
	}
	c.PersistentFlags().IntVar(&port, "rpc-port", defaultDirectoryRPCPort, "the agents' --directory-rpc-port")
	c.PersistentFlags().BoolVar(&asJSON, "json", false, "print JSON")
	client := func(ctx context.Context) (*DirectoryClient, func(), error) {
		st, err := g.openStore(ctx)
		if err != nil {
			return nil, nil, err
		}
		dc := NewDirectoryClient(st, port, g.directoryDialer())
		return dc, func() { dc.Close(); st.Close() }, nil
	}
	printJSON := func(v any) error {
		enc := json.NewEncoder(g.out)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	lookup := &cobra.Command{
		Use:   "lookup VPC IP",
		Short: "Where an endpoint lives and which nodes hold its record",
		Long: `Ask every holder of the endpoint's shard (in rank order, as agents do) for
the record of {VPC's VNI, IP}: the hosting node, MAC and version, and each
holder's answer (found, not-found, loading, not-holder, or an error).`,
		Args: cobra.ExactArgs(2),
		RunE: func(c *cobra.Command, args []string) error {
			ip, err := netip.ParseAddr(args[1])
			if err != nil || !ip.Is4() {
				return fmt.Errorf("directory lookup: %q is not an IPv4 address", args[1])
			}
			dc, done, err := client(c.Context())
			if err != nil {
				return err
			}
			defer done()
			r, err := dc.Lookup(c.Context(), args[0], ip)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(r)
			}
			if r.Found {
				fmt.Fprintf(g.out, "%s %s (vni %d, shard %d): on node %s, mac %s, version %d\n",
					args[0], ip, r.Key.VNI, r.Shard, r.Record.Node, r.Record.HardwareAddr(), r.Record.Version)
			} else {
				fmt.Fprintf(g.out, "%s %s (vni %d, shard %d): not found\n", args[0], ip, r.Key.VNI, r.Shard)
			}
			tw := table(g.out, "RANK", "HOLDER", "ANSWER", "TOOK")
			for i, h := range r.Holders {
				row(tw, i+1, h.Node, h.Status, h.Took.Round(time.Microsecond))
			}
			tw.Flush()
			if !r.Found {
				return exitError{code: 1}
			}
			return nil
		},
	}
	ring := &cobra.Command{
		Use:   "ring",
		Short: "Members, shards per node and missing replicas",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			dc, done, err := client(c.Context())
			if err != nil {
				return err
			}
			defer done()
			rs, err := dc.Ring(c.Context())
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(rs)
			}
			printRing(g, rs)
			return nil
		},
	}
	backfill := &cobra.Command{
		Use:   "backfill",
		Short: "Write the directory key or label of endpoints stored before the directory layout",
		Long: `Endpoints written before the directory layout (an upgrade) lack their
directory key (etcd) or genie.cni.io/shard label (Kubernetes) until their
agent restarts and re-puts them. backfill writes them for every endpoint,
conditioned on the endpoint being unchanged; run it once after upgrading
every agent, before switching to --endpoint-mode directory, and after
changing --directory-shards (with the store's new shard count).`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			st, err := g.openStore(c.Context())
			if err != nil {
				return err
			}
			defer st.Close()
			b, ok := st.(interface {
				BackfillDirectory(context.Context) (int, error)
			})
			if !ok {
				return errors.New("directory backfill: this store has no directory layout")
			}
			n, err := b.BackfillDirectory(c.Context())
			if err != nil {
				return err
			}
			fmt.Fprintf(g.out, "wrote %d directory records\n", n)
			return nil
		},
	}
	c.AddCommand(lookup, ring, backfill)
	return c
}

func printRing(g *globals, rs *RingStatus) {
	fmt.Fprintf(g.out, "directory: %d members, %d shards, R = %d, replicas missing %d, shards without a loaded holder %d\n",
		len(rs.Members), rs.Shards, rs.Replicas, rs.ReplicasMissing, rs.Unheld)
	tw := table(g.out, "NODE", "MEMBERS SEEN", "SHARDS LOADED", "LOADING", "RECORDS", "LEARNED")
	for _, n := range rs.Nodes {
		if n.View == nil {
			row(tw, n.Node, "unreachable: "+firstLine(n.Err), "-", "-", "-", "-")
			continue
		}
		row(tw, n.Node, len(n.View.Members), len(n.View.Loaded), len(n.View.Loading), n.View.Records, n.View.Learned)
	}
	tw.Flush()
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	if len(s) > 60 {
		s = s[:60] + "..."
	}
	return s
}

// printStatusRing adds the ring to geniectl status when the cluster runs
// the directory (a member answers); nothing otherwise.
func printStatusRing(ctx context.Context, g *globals, st store.Store) {
	dc := NewDirectoryClient(st, defaultDirectoryRPCPort, g.directoryDialer())
	defer dc.Close()
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	rs, err := dc.Ring(ctx)
	if err != nil {
		return
	}
	fmt.Fprintln(g.out)
	printRing(g, rs)
}
