package ipam

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"

	"github.com/cni-genie/cni-genie/pkg/store"
	"github.com/cni-genie/cni-genie/pkg/vpc"
)

const stateVersion = 1

// fileState is the JSON layout of the state file.
type fileState struct {
	Version     int           `json:"version"`
	Node        string        `json:"node"`
	Subnets     []vpc.Subnet  `json:"subnets,omitempty"`
	Blocks      []store.Block `json:"blocks,omitempty"`
	Allocations []Allocation  `json:"allocations,omitempty"`
}

// block is a block the node holds, with its addresses in use.
type block struct {
	store.Block
	used map[netip.Addr]string // address -> owner
	// verified: known to be held in the store. False for a block kept
	// empty after its last release; checked again before reuse.
	verified bool
	// releasing: empty and being given back to the store (a.mu released
	// meanwhile); nothing is allocated from it.
	releasing bool
}

type impl struct {
	// storeMu serialises the operations that need the store (block
	// claims, verifications and releases, subnet look-ups); they make
	// their round trips with mu released (see unlocked), so ADDs served
	// from a block with room never wait for the store.
	storeMu sync.Mutex
	mu      sync.Mutex
	st      store.Store
	node    string
	dir     string
	log     *slog.Logger
	lock    *os.File
	sync    bool
	subnets map[string]vpc.Subnet // "vpc/subnet" -> subnet
	blocks  map[string][]*block   // "vpc/subnet" -> blocks, sorted
	allocs  map[string]Allocation // owner -> allocation
	closed  bool
}

func subnetKey(v, s string) string { return v + "/" + s }

func newAllocator(ctx context.Context, st store.Store, node, stateDir string, opts Options) (*Allocator, error) {
	if err := vpc.ValidateNodeName(node); err != nil {
		return nil, fmt.Errorf("ipam: %w", err)
	}
	if stateDir == "" {
		return nil, fmt.Errorf("ipam for node %q: state dir is empty", node)
	}
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return nil, fmt.Errorf("ipam for node %q: %w", node, err)
	}
	lf, err := os.OpenFile(filepath.Join(stateDir, "ipam.lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("ipam for node %q: %w", node, err)
	}
	if err := syscall.Flock(int(lf.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		lf.Close()
		return nil, fmt.Errorf("ipam for node %q: state dir %s is in use by another allocator: %w", node, stateDir, err)
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	a := &Allocator{impl{
		st: st, node: node, dir: stateDir, log: log.With("component", "ipam", "node", node), lock: lf, sync: opts.Sync,
		subnets: map[string]vpc.Subnet{}, blocks: map[string][]*block{}, allocs: map[string]Allocation{},
	}}
	if err := a.load(); err != nil {
		lf.Close()
		return nil, fmt.Errorf("ipam for node %q: %w", node, err)
	}
	if err := a.resync(ctx); err != nil {
		lf.Close()
		return nil, fmt.Errorf("ipam for node %q: %w", node, err)
	}
	return a, nil
}

func (a *impl) close() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return nil
	}
	a.closed = true
	return a.lock.Close()
}

func (a *impl) statePath() string { return filepath.Join(a.dir, StateFile) }

// load reads the state file, if any, into memory (blocks unverified).
func (a *impl) load() error {
	b, err := os.ReadFile(a.statePath())
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read state: %w", err)
	}
	var fs fileState
	if err := json.Unmarshal(b, &fs); err != nil {
		// A torn or corrupt file (power loss without Sync): set it aside
		// and rebuild from the store.
		bad := a.statePath() + ".corrupt"
		a.log.Warn("state file is corrupt; rebuilding from the store", "file", a.statePath(), "saved-as", bad, "err", err)
		if err := os.Rename(a.statePath(), bad); err != nil {
			return fmt.Errorf("set aside corrupt state: %w", err)
		}
		return nil
	}
	if fs.Version != stateVersion {
		return fmt.Errorf("state %s: version %d, want %d", a.statePath(), fs.Version, stateVersion)
	}
	if fs.Node != a.node {
		return fmt.Errorf("state %s belongs to node %q", a.statePath(), fs.Node)
	}
	for _, s := range fs.Subnets {
		a.subnets[s.Key()] = s
	}
	for _, b := range fs.Blocks {
		a.addBlock(b, false)
	}
	for _, al := range fs.Allocations {
		blk := a.findBlock(al.VPC, al.Subnet, al.IP.Addr())
		if blk == nil {
			a.log.Warn("dropping allocation outside the node's blocks", "owner", al.Owner, "ip", al.IP)
			continue
		}
		blk.used[al.IP.Addr()] = al.Owner
		a.allocs[al.Owner] = al
	}
	return nil
}

// resync cross-checks memory with the store: subnets refreshed, local
// blocks the store no longer gives this node dropped with their
// allocations, store blocks of this node adopted, and addresses of this
// node's endpoints recovered.
func (a *impl) resync(ctx context.Context) error {
	subnets, err := a.st.ListSubnets(ctx, "")
	if err != nil {
		return fmt.Errorf("resync: %w", err)
	}
	all, err := a.st.ListBlocks(ctx, "", "")
	if err != nil {
		return fmt.Errorf("resync: %w", err)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.subnets = map[string]vpc.Subnet{}
	for _, s := range subnets {
		a.subnets[s.Key()] = s
	}
	held := map[string]bool{}
	for _, b := range all {
		if b.Node == a.node {
			held[subnetKey(b.VPC, b.Subnet)+"/"+b.CIDR.String()] = true
		}
	}
	for key, bs := range a.blocks {
		kept := bs[:0]
		for _, b := range bs {
			if held[key+"/"+b.CIDR.String()] {
				b.verified = true
				kept = append(kept, b)
				continue
			}
			// The store lost the block (subnet re-created, store restored
			// from an old backup...). Re-claim it if this node still uses
			// it and nobody else took it; else its allocations are void.
			sn, ok := a.subnets[key]
			if ok && len(b.used) > 0 && sn.CIDR.Contains(b.CIDR.Addr()) && sn.BlockPrefixLen == b.CIDR.Bits() {
				got, err := a.st.ClaimBlockContaining(ctx, b.VPC, b.Subnet, a.node, b.CIDR.Addr())
				if err == nil && got.CIDR == b.CIDR {
					a.log.Warn("re-claimed a block the store had lost", "subnet", key, "block", b.CIDR, "allocations", len(b.used))
					b.verified = true
					kept = append(kept, b)
					continue
				}
				if err != nil && !errors.Is(err, store.ErrConflict) && !errors.Is(err, store.ErrNotFound) {
					return fmt.Errorf("resync: %w", err)
				}
			}
			a.log.Warn("dropping block the store no longer assigns to this node", "subnet", key, "block", b.CIDR, "allocations", len(b.used))
			for _, owner := range b.used {
				delete(a.allocs, owner)
			}
		}
		if len(kept) == 0 {
			delete(a.blocks, key)
		} else {
			a.blocks[key] = kept
		}
	}
	adopted := 0
	for _, b := range all {
		if b.Node == a.node && a.findBlock(b.VPC, b.Subnet, b.CIDR.Addr()) == nil {
			a.addBlock(b, true)
			adopted++
		}
	}
	if adopted > 0 {
		a.log.Info("adopted blocks the state file lacked", "count", adopted)
	}
	{
		// Recover addresses the state file lacks from the node's
		// published endpoints. They lie in the node's blocks (the store
		// enforces it), so only the VPCs of those blocks are listed, one
		// at a time: a listing of every endpoint of a 100k-endpoint
		// cluster cost the restarting agent ~200 MiB.
		vpcs := map[string]bool{}
		for _, bs := range a.blocks {
			for _, b := range bs {
				vpcs[b.VPC] = true
			}
		}
		var eps []vpc.Endpoint
		for v := range vpcs {
			some, _, err := a.st.ListEndpoints(ctx, v)
			if err != nil {
				return fmt.Errorf("resync: %w", err)
			}
			for _, e := range some {
				if e.Node == a.node {
					eps = append(eps, e)
				}
			}
		}
		for _, e := range eps {
			if e.Node != a.node {
				continue
			}
			if _, ok := a.allocs[e.ID]; ok {
				continue
			}
			blk := a.findBlock(e.VPC, e.Subnet, e.IP)
			sn, ok := a.subnets[subnetKey(e.VPC, e.Subnet)]
			if blk == nil || !ok || blk.used[e.IP] != "" {
				continue
			}
			blk.used[e.IP] = e.ID
			a.allocs[e.ID] = Allocation{Owner: e.ID, VPC: e.VPC, Subnet: e.Subnet, IP: netip.PrefixFrom(e.IP, sn.CIDR.Bits()),
				Gateway: sn.Gateway, Block: blk.CIDR, Pod: podOfEndpoint(e.ID)}
			a.log.Info("recovered allocation from the store", "owner", e.ID, "ip", e.IP)
		}
	}
	return a.persist()
}

// podOfEndpoint is the container ID of an endpoint ID (vpc.EndpointID:
// "<containerID>/<ifname>").
func podOfEndpoint(id string) string {
	if i := strings.LastIndexByte(id, '/'); i > 0 {
		return id[:i]
	}
	return ""
}

func (a *impl) addBlock(b store.Block, verified bool) *block {
	key := subnetKey(b.VPC, b.Subnet)
	nb := &block{Block: b, used: map[netip.Addr]string{}, verified: verified}
	a.blocks[key] = append(a.blocks[key], nb)
	slices.SortFunc(a.blocks[key], func(x, y *block) int { return x.CIDR.Addr().Compare(y.CIDR.Addr()) })
	return nb
}

func (a *impl) removeBlock(b *block) {
	key := subnetKey(b.VPC, b.Subnet)
	a.blocks[key] = slices.DeleteFunc(a.blocks[key], func(x *block) bool { return x == b })
	if len(a.blocks[key]) == 0 {
		delete(a.blocks, key)
	}
}

func (a *impl) findBlock(v, s string, ip netip.Addr) *block {
	for _, b := range a.blocks[subnetKey(v, s)] {
		if b.CIDR.Contains(ip) {
			return b
		}
	}
	return nil
}

// persist writes the state atomically: temp file, fsync, rename, fsync dir.
func (a *impl) persist() error {
	fs := fileState{Version: stateVersion, Node: a.node}
	used := map[string]bool{}
	for key, bs := range a.blocks {
		used[key] = true
		for _, b := range bs {
			fs.Blocks = append(fs.Blocks, b.Block)
		}
	}
	for key, s := range a.subnets {
		if used[key] {
			fs.Subnets = append(fs.Subnets, s)
		}
	}
	for _, al := range a.allocs {
		fs.Allocations = append(fs.Allocations, al)
	}
	slices.SortFunc(fs.Subnets, func(x, y vpc.Subnet) int { return cmp.Compare(x.Key(), y.Key()) })
	slices.SortFunc(fs.Blocks, func(x, y store.Block) int {
		return cmp.Or(cmp.Compare(x.VPC, y.VPC), cmp.Compare(x.Subnet, y.Subnet), x.CIDR.Addr().Compare(y.CIDR.Addr()))
	})
	slices.SortFunc(fs.Allocations, func(x, y Allocation) int { return cmp.Compare(x.Owner, y.Owner) })
	b, err := json.MarshalIndent(fs, "", "  ")
	if err != nil {
		return fmt.Errorf("encode state: %w", err)
	}
	tmp, err := os.CreateTemp(a.dir, StateFile+".tmp*")
	if err != nil {
		return fmt.Errorf("write state: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return fmt.Errorf("write state: %w", err)
	}
	if a.sync {
		if err := tmp.Sync(); err != nil {
			tmp.Close()
			return fmt.Errorf("write state: %w", err)
		}
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write state: %w", err)
	}
	if err := os.Rename(tmp.Name(), a.statePath()); err != nil {
		return fmt.Errorf("write state: %w", err)
	}
	if a.sync {
		if d, err := os.Open(a.dir); err == nil {
			d.Sync()
			d.Close()
		}
	}
	return nil
}

func (a *impl) allocate(ctx context.Context, vpcName, subnetName, owner string, requested netip.Addr) (Allocation, error) {
	return a.allocatePod(ctx, vpcName, subnetName, "", owner, requested)
}

// podAddrs returns the addresses held by pod's allocations (nil for no
// pod); a.mu is held. O(allocations of the node), a few hundred.
func (a *impl) podAddrs(pod string) map[netip.Addr]string {
	if pod == "" {
		return nil
	}
	var out map[netip.Addr]string
	for _, al := range a.allocs {
		if al.Pod == pod {
			if out == nil {
				out = map[netip.Addr]string{}
			}
			out[al.IP.Addr()] = al.Owner
		}
	}
	return out
}

func (a *impl) allocatePod(ctx context.Context, vpcName, subnetName, pod, owner string, requested netip.Addr) (Allocation, error) {
	what := fmt.Sprintf("allocate address for %q in subnet %q", owner, subnetKey(vpcName, subnetName))
	if owner == "" {
		return Allocation{}, fmt.Errorf("%s: owner is empty: %w", what, vpc.ErrInvalid)
	}
	// Fast path: a verified block with room, no store round trip and
	// only mu held.
	a.mu.Lock()
	if al, done, err := a.existingLocked(what, vpcName, subnetName, owner, requested); done {
		a.mu.Unlock()
		return al, err
	}
	key := subnetKey(vpcName, subnetName)
	if sn, ok := a.subnets[key]; ok && !requested.IsValid() {
		avoid := a.podAddrs(pod)
		for _, b := range a.blocks[key] {
			if !b.verified || b.releasing {
				continue
			}
			if ip := lowestFree(sn, b, avoid); ip.IsValid() {
				al, err := a.commitLocked(what, sn, b, ip, owner, pod)
				a.mu.Unlock()
				return al, err
			}
		}
	}
	a.mu.Unlock()

	// Slow path: the store is needed. One at a time (storeMu); mu is
	// released around each round trip, so the state is re-read after it.
	a.storeMu.Lock()
	defer a.storeMu.Unlock()
	a.mu.Lock()
	defer a.mu.Unlock()
	if al, done, err := a.existingLocked(what, vpcName, subnetName, owner, requested); done {
		return al, err
	}
	sn, ok := a.subnets[key]
	if !ok || len(a.blocks[key]) == 0 {
		// No block here yet: learn (or refresh) the subnet.
		var s vpc.Subnet
		var err error
		a.unlocked(func() { s, err = a.st.GetSubnet(ctx, vpcName, subnetName) })
		if err != nil {
			return Allocation{}, fmt.Errorf("%s: %w", what, err)
		}
		if a.closed {
			return Allocation{}, fmt.Errorf("%s: allocator is closed", what)
		}
		sn = s
		a.subnets[key] = s
	}
	var (
		blk *block
		ip  netip.Addr
		err error
	)
	if requested.IsValid() {
		blk, ip, err = a.takeStatic(ctx, &sn, requested, pod)
	} else {
		blk, ip, err = a.takeAny(ctx, &sn, pod)
	}
	if err == nil && a.closed {
		err = errors.New("allocator is closed")
	}
	if err != nil {
		return Allocation{}, fmt.Errorf("%s: %w", what, err)
	}
	if al, done, err := a.existingLocked(what, vpcName, subnetName, owner, requested); done {
		return al, err // the same owner, allocated meanwhile
	}
	return a.commitLocked(what, sn, blk, ip, owner, pod)
}

// unlocked runs fn (a store round trip) with a.mu released; the caller
// holds a.storeMu and a.mu, and re-reads what fn's result depends on.
func (a *impl) unlocked(fn func()) {
	a.mu.Unlock()
	defer a.mu.Lock()
	fn()
}

// existingLocked answers an allocation of an owner that already has one,
// and a closed allocator (done: return al, err).
func (a *impl) existingLocked(what, vpcName, subnetName, owner string, requested netip.Addr) (al Allocation, done bool, err error) {
	if a.closed {
		return Allocation{}, true, fmt.Errorf("%s: allocator is closed", what)
	}
	if al, ok := a.allocs[owner]; ok {
		if al.VPC == vpcName && al.Subnet == subnetName && (!requested.IsValid() || requested == al.IP.Addr()) {
			return al, true, nil
		}
		return Allocation{}, true, fmt.Errorf("%s: owner holds %s in subnet %q: %w", what, al.IP, subnetKey(al.VPC, al.Subnet), ErrOwnerConflict)
	}
	return Allocation{}, false, nil
}

// commitLocked records ip of b for owner and persists it.
func (a *impl) commitLocked(what string, sn vpc.Subnet, b *block, ip netip.Addr, owner, pod string) (Allocation, error) {
	al := Allocation{Owner: owner, VPC: sn.VPC, Subnet: sn.Name, IP: netip.PrefixFrom(ip, sn.CIDR.Bits()), Gateway: sn.Gateway, Block: b.CIDR, Pod: pod}
	b.used[ip] = owner
	a.allocs[owner] = al
	if err := a.persist(); err != nil {
		delete(b.used, ip)
		delete(a.allocs, owner)
		return Allocation{}, fmt.Errorf("%s: %w", what, err)
	}
	return al, nil
}

// verify makes sure an unverified block is still the node's in the store,
// refreshing the subnet; it drops the block if not.
func (a *impl) verify(ctx context.Context, sn *vpc.Subnet, b *block) (bool, error) {
	if b.verified {
		return true, nil
	}
	var fresh vpc.Subnet
	var err error
	a.unlocked(func() { fresh, err = a.st.GetSubnet(ctx, b.VPC, b.Subnet) })
	if errors.Is(err, store.ErrNotFound) {
		a.log.Info("subnet gone; dropping its empty blocks", "subnet", sn.Key())
		for _, x := range slices.Clone(a.blocks[sn.Key()]) {
			if len(x.used) == 0 {
				a.removeBlock(x)
			}
		}
		return false, err
	}
	if err != nil {
		return false, err
	}
	if fresh.CIDR != sn.CIDR || fresh.BlockPrefixLen != sn.BlockPrefixLen || fresh.Gateway != sn.Gateway {
		// Recreated differently: an empty block of the old shape is void.
		*sn = fresh
		a.subnets[sn.Key()] = fresh
		if len(b.used) == 0 {
			a.removeBlock(b)
			return false, nil
		}
	}
	var got store.Block
	a.unlocked(func() { got, err = a.st.ClaimBlockContaining(ctx, b.VPC, b.Subnet, a.node, b.CIDR.Addr()) })
	if err != nil || got.CIDR != b.CIDR {
		a.log.Info("empty block no longer ours; dropping it", "block", b.CIDR, "err", err)
		if len(b.used) == 0 {
			a.removeBlock(b)
		}
		if errors.Is(err, store.ErrConflict) || err == nil {
			return false, nil
		}
		return false, err
	}
	b.verified = true
	return true, nil
}

func (a *impl) takeAny(ctx context.Context, sn *vpc.Subnet, pod string) (*block, netip.Addr, error) {
	for _, b := range slices.Clone(a.blocks[sn.Key()]) {
		if b.releasing || !lowestFree(*sn, b, a.podAddrs(pod)).IsValid() {
			continue
		}
		ok, err := a.verify(ctx, sn, b)
		if err != nil {
			return nil, netip.Addr{}, err
		}
		// Re-read after the round trip: fast-path ADDs may have taken
		// addresses meanwhile.
		if ip := lowestFree(*sn, b, a.podAddrs(pod)); ok && ip.IsValid() {
			return b, ip, nil
		}
	}
	var nb store.Block
	var err error
	a.unlocked(func() { nb, err = a.st.ClaimBlock(ctx, sn.VPC, sn.Name, a.node) })
	if errors.Is(err, store.ErrNotFound) {
		delete(a.subnets, sn.Key())
	}
	if errors.Is(err, store.ErrSubnetFull) {
		return nil, netip.Addr{}, fmt.Errorf("the node's %d block(s) are full and %w", len(a.blocks[sn.Key()]), err)
	}
	if err != nil {
		return nil, netip.Addr{}, err
	}
	a.log.Info("claimed block", "subnet", sn.Key(), "block", nb.CIDR)
	b := a.addBlock(nb, true)
	ip := lowestFree(*sn, b, a.podAddrs(pod))
	if !ip.IsValid() {
		return nil, netip.Addr{}, fmt.Errorf("claimed block %s has no assignable address", nb.CIDR)
	}
	return b, ip, nil
}

func (a *impl) takeStatic(ctx context.Context, sn *vpc.Subnet, ip netip.Addr, pod string) (*block, netip.Addr, error) {
	b, ip, err := a.takeStaticOnce(ctx, sn, ip)
	if err != nil {
		return nil, ip, err
	}
	// Checked after the round trips (mu was released during them).
	if o := b.used[ip]; o != "" {
		return nil, ip, fmt.Errorf("requested %s is held by %q: %w", ip, o, ErrAddressInUse)
	}
	if o, ok := a.podAddrs(pod)[ip]; ok {
		return nil, ip, fmt.Errorf("requested %s is held by %q of the same pod: %w", ip, o, ErrAddressInUse)
	}
	return b, ip, nil
}

func (a *impl) takeStaticOnce(ctx context.Context, sn *vpc.Subnet, ip netip.Addr) (*block, netip.Addr, error) {
	switch {
	case !ip.Is4() || !sn.CIDR.Contains(ip):
		return nil, ip, fmt.Errorf("requested %s is outside %s: %w", ip, sn, ErrAddressReserved)
	case ip == sn.Gateway:
		return nil, ip, fmt.Errorf("requested %s is the gateway of %s: %w", ip, sn, ErrAddressReserved)
	case !sn.Assignable(ip):
		return nil, ip, fmt.Errorf("requested %s is the network or broadcast address of %s: %w", ip, sn, ErrAddressReserved)
	}
	b := a.findBlock(sn.VPC, sn.Name, ip)
	if b != nil {
		if o := b.used[ip]; o != "" {
			return nil, ip, fmt.Errorf("requested %s is held by %q: %w", ip, o, ErrAddressInUse)
		}
		ok, err := a.verify(ctx, sn, b)
		if err != nil {
			return nil, ip, err
		}
		if ok {
			return b, ip, nil
		}
	}
	var nb store.Block
	var err error
	a.unlocked(func() { nb, err = a.st.ClaimBlockContaining(ctx, sn.VPC, sn.Name, a.node, ip) })
	if errors.Is(err, store.ErrConflict) {
		return nil, ip, fmt.Errorf("requested %s: %w: %w", ip, err, ErrAddressInUse)
	}
	if err != nil {
		return nil, ip, err
	}
	a.log.Info("claimed block for a static address", "subnet", sn.Key(), "block", nb.CIDR, "ip", ip)
	return a.addBlock(nb, true), ip, nil
}

// lowestFree returns the lowest assignable free address of b not in
// avoid, or zero.
func lowestFree(sn vpc.Subnet, b *block, avoid map[netip.Addr]string) netip.Addr {
	for ip := b.CIDR.Addr(); ip.IsValid() && b.CIDR.Contains(ip); ip = ip.Next() {
		if _, taken := avoid[ip]; sn.Assignable(ip) && b.used[ip] == "" && !taken {
			return ip
		}
	}
	return netip.Addr{}
}

func (a *impl) release(ctx context.Context, owner string) error {
	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		return fmt.Errorf("release address of %q: allocator is closed", owner)
	}
	b := a.releaseLocked(owner)
	if err := a.persist(); err != nil {
		if b != nil {
			b.releasing = false
		}
		a.mu.Unlock()
		return fmt.Errorf("release address of %q: %w", owner, err)
	}
	a.mu.Unlock()
	if b != nil {
		a.giveBack(ctx, []*block{b})
	}
	return nil
}

// releaseLocked frees owner's address in memory. If that empties a block
// that is not the node's last of its subnet, the block is marked
// releasing (nothing is allocated from it) and returned, for giveBack.
func (a *impl) releaseLocked(owner string) *block {
	al, ok := a.allocs[owner]
	if !ok {
		return nil
	}
	delete(a.allocs, owner)
	b := a.findBlock(al.VPC, al.Subnet, al.IP.Addr())
	if b == nil {
		return nil
	}
	delete(b.used, al.IP.Addr())
	if len(b.used) > 0 || b.releasing {
		return nil
	}
	if len(a.blocks[subnetKey(b.VPC, b.Subnet)]) == 1 {
		// Keep the last block; check it again before reuse.
		b.verified = false
		return nil
	}
	b.releasing = true
	return b
}

// giveBack releases empty blocks marked releasing to the store, one store
// operation at a time (storeMu) and with mu released during the round
// trips. A block that failed to release (or got an address meanwhile:
// only a slow-path allocation, serialised by storeMu, can use it) is
// kept, unverified, for reuse or a later release.
func (a *impl) giveBack(ctx context.Context, bs []*block) []error {
	a.storeMu.Lock()
	defer a.storeMu.Unlock()
	var errs []error
	for _, b := range bs {
		a.mu.Lock()
		if len(b.used) > 0 || a.closed {
			b.releasing = false
			a.mu.Unlock()
			continue
		}
		a.mu.Unlock()
		err := a.st.ReleaseBlock(ctx, b.VPC, b.Subnet, b.CIDR, a.node)
		a.mu.Lock()
		b.releasing = false
		if err != nil && !errors.Is(err, store.ErrConflict) {
			// Still ours in the store: keep it, to be reused or released later.
			a.log.Warn("could not release empty block", "block", b.CIDR, "err", err)
			b.verified = false
			errs = append(errs, err)
		} else {
			a.log.Info("released empty block", "subnet", subnetKey(b.VPC, b.Subnet), "block", b.CIDR)
			a.removeBlock(b)
			if err := a.persist(); err != nil {
				errs = append(errs, err)
			}
		}
		a.mu.Unlock()
	}
	return errs
}

func (a *impl) gc(ctx context.Context, valid []string) ([]string, error) {
	keep := make(map[string]bool, len(valid))
	for _, v := range valid {
		keep[v] = true
	}
	a.mu.Lock()
	var freed []string
	for owner := range a.allocs {
		if !keep[owner] {
			freed = append(freed, owner)
		}
	}
	slices.Sort(freed)
	var empty []*block
	for _, owner := range freed {
		if b := a.releaseLocked(owner); b != nil {
			empty = append(empty, b)
		}
	}
	err := a.persist()
	a.mu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("gc: %w", err)
	}
	a.giveBack(ctx, empty) // failures keep the block; logged
	return freed, nil
}

func (a *impl) allocations() []Allocation {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]Allocation, 0, len(a.allocs))
	for _, al := range a.allocs {
		out = append(out, al)
	}
	slices.SortFunc(out, func(x, y Allocation) int { return cmp.Compare(x.Owner, y.Owner) })
	return out
}

func (a *impl) get(owner string) (Allocation, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	al, ok := a.allocs[owner]
	return al, ok
}

func (a *impl) heldBlocks() []store.Block {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []store.Block
	for _, bs := range a.blocks {
		for _, b := range bs {
			out = append(out, b.Block)
		}
	}
	slices.SortFunc(out, func(x, y store.Block) int {
		return cmp.Or(cmp.Compare(x.VPC, y.VPC), cmp.Compare(x.Subnet, y.Subnet), x.CIDR.Addr().Compare(y.CIDR.Addr()))
	})
	return out
}

func (a *impl) releaseEmptyBlocks(ctx context.Context) ([]store.Block, error) {
	a.mu.Lock()
	var empty []*block
	for _, bs := range a.blocks {
		for _, b := range bs {
			if len(b.used) == 0 && !b.releasing {
				b.releasing = true
				empty = append(empty, b)
			}
		}
	}
	a.mu.Unlock()
	errs := a.giveBack(ctx, empty)
	a.mu.Lock()
	var out []store.Block
	for _, b := range empty {
		if a.findBlock(b.VPC, b.Subnet, b.CIDR.Addr()) != b {
			out = append(out, b.Block)
		}
	}
	a.mu.Unlock()
	slices.SortFunc(out, func(x, y store.Block) int {
		return cmp.Or(cmp.Compare(x.VPC, y.VPC), cmp.Compare(x.Subnet, y.Subnet), x.CIDR.Addr().Compare(y.CIDR.Addr()))
	})
	if err := errors.Join(errs...); err != nil {
		return out, fmt.Errorf("release empty blocks: %w", err)
	}
	return out, nil
}
