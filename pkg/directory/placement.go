package directory

import (
	"fmt"
	"hash/fnv"
	"net/netip"
	"slices"
	"strings"
	"sync"
)

// Defaults of the placement.
const (
	// DefaultShards is the number of virtual shards. 4096 keeps the
	// shard-to-holder BPF array at 4096 entries (48 KiB with R = 3) and
	// gives every node of a 1,000-node cluster about 12 shards with R = 3.
	DefaultShards = 4096
	// DefaultReplicas is R, the number of nodes holding each shard.
	DefaultReplicas = 3
	// MaxShards bounds the shard count (the BPF array's size).
	MaxShards = 1 << 20
)

// Member is one live node of the directory: its unique name (the node
// name) and the underlay address of its directory RPC server.
type Member struct {
	Name string         `json:"name"`
	RPC  netip.AddrPort `json:"rpc"`
}

// Placement maps every shard to its R holders by rendezvous (highest
// random weight) hashing: the holders of shard s are the R members with
// the largest Mix64(hash(name) ^ seed(s)). Every node computes the same
// placement from the same member set, whatever order it learned the
// members in; a member joining or leaving changes only the shards in whose
// top R it ranks, about R/N of them.
//
// A Placement is immutable and safe for concurrent use.
type Placement struct {
	shards    int
	replicas  int // min(R, members)
	requested int // R
	members   []Member
	index     map[string]int32
	// holders[s*replicas+rank] is the member index of shard s's holder
	// of that rank (0 = highest weight).
	holders []int32
	// weights[s*replicas+rank] is the weight of that holder.
	weights []uint64
	// byMember[i] lists member i's shards in increasing order.
	byMember [][]uint32
}

// ValidateShape checks a shard count (a power of two, at most MaxShards)
// and a replica count (at least 1).
func ValidateShape(shards, replicas int) error {
	if shards <= 0 || shards > MaxShards || shards&(shards-1) != 0 {
		return fmt.Errorf("shards %d: not a power of two in [1, %d]", shards, MaxShards)
	}
	if replicas < 1 {
		return fmt.Errorf("replicas %d: must be at least 1", replicas)
	}
	return nil
}

// NewPlacement computes the placement of shards shards with replicas
// holders each over members. Members are identified by name; a duplicate
// name is an error. Fewer members than replicas gives every shard all the
// members. The cost is one Mix64 per shard and member (41M at 10,000
// members and 4096 shards) and a few allocations.
func NewPlacement(members []Member, shards, replicas int) (*Placement, error) {
	if err := ValidateShape(shards, replicas); err != nil {
		return nil, err
	}
	ms := slices.Clone(members)
	slices.SortFunc(ms, func(a, b Member) int { return strings.Compare(a.Name, b.Name) })
	p := &Placement{shards: shards, requested: replicas, members: ms, index: make(map[string]int32, len(ms))}
	for i, m := range ms {
		if m.Name == "" {
			return nil, fmt.Errorf("member %d: empty name", i)
		}
		if i > 0 && ms[i-1].Name == m.Name {
			return nil, fmt.Errorf("member %q: listed twice", m.Name)
		}
		p.index[m.Name] = int32(i)
	}
	p.replicas = min(replicas, len(ms))
	if p.replicas == 0 {
		return p, nil
	}
	hs := make([]uint64, len(ms))
	for i, m := range ms {
		hs[i] = nameHash(m.Name)
	}
	r := p.replicas
	p.holders = make([]int32, shards*r)
	p.weights = make([]uint64, shards*r)
	// Top-r selection by insertion into a small sorted window, with
	// ties broken by member (name) order so the result is total.
	var bw [16]uint64
	var bi [16]int32
	winW, winI := bw[:0], bi[:0]
	if r > len(bw) {
		winW, winI = make([]uint64, 0, r), make([]int32, 0, r)
	}
	for s := range shards {
		seed := Mix64(uint64(s) + 0x9e3779b97f4a7c15)
		winW, winI = winW[:0], winI[:0]
		for i, h := range hs {
			w := Mix64(h ^ seed)
			if len(winW) == r && w <= winW[r-1] {
				continue
			}
			// Insert (w, i) keeping winW descending.
			j := len(winW)
			if j < r {
				winW, winI = append(winW, 0), append(winI, 0)
			} else {
				j = r - 1
			}
			for j > 0 && winW[j-1] < w {
				winW[j], winI[j] = winW[j-1], winI[j-1]
				j--
			}
			winW[j], winI[j] = w, int32(i)
		}
		copy(p.holders[s*r:], winI)
		copy(p.weights[s*r:], winW)
	}
	p.index2()
	return p, nil
}

// index2 builds the inverted index: one backing array for all members.
func (p *Placement) index2() {
	ms, r := p.members, p.replicas
	counts := make([]int, len(ms))
	for _, h := range p.holders {
		counts[h]++
	}
	all := make([]uint32, len(p.holders))
	p.byMember = make([][]uint32, len(ms))
	off := 0
	for i, c := range counts {
		p.byMember[i] = all[off : off : off+c]
		off += c
	}
	for s := range p.shards {
		for _, h := range p.holders[s*r : s*r+r] {
			p.byMember[h] = append(p.byMember[h], uint32(s))
		}
	}
}

// Next returns the placement of members, the same as NewPlacement with
// p's shape, computed incrementally when members is p's set plus or minus
// one member (a join: one weight per shard; a leave: only the leaver's
// shards are ranked again) and from scratch otherwise.
func (p *Placement) Next(members []Member) (*Placement, error) {
	r := p.replicas
	if r == 0 || p.weights == nil {
		return NewPlacement(members, p.shards, max(r, p.requested))
	}
	switch d := len(members) - len(p.members); {
	case d == 1 && r == p.requested:
		return p.join(members)
	case d == -1 && len(members) >= p.requested:
		return p.leave(members)
	}
	return NewPlacement(members, p.shards, p.requested)
}

// sortedMembers sorts a copy of ms by name and checks names are unique.
func sortedMembers(ms []Member) ([]Member, error) {
	out := slices.Clone(ms)
	slices.SortFunc(out, func(a, b Member) int { return strings.Compare(a.Name, b.Name) })
	for i, m := range out {
		if m.Name == "" {
			return nil, fmt.Errorf("member %d: empty name", i)
		}
		if i > 0 && out[i-1].Name == m.Name {
			return nil, fmt.Errorf("member %q: listed twice", m.Name)
		}
	}
	return out, nil
}

func (p *Placement) join(members []Member) (*Placement, error) {
	ms, err := sortedMembers(members)
	if err != nil {
		return nil, err
	}
	// ms must be p.members with one member inserted at pos.
	pos := -1
	for i, j := 0, 0; i < len(ms); i++ {
		if j < len(p.members) && ms[i] == p.members[j] {
			j++
			continue
		}
		if pos >= 0 {
			return NewPlacement(members, p.shards, p.requested)
		}
		pos = i
	}
	if pos < 0 {
		return NewPlacement(members, p.shards, p.requested)
	}
	q := p.shell(ms)
	r := q.replicas
	hy := nameHash(ms[pos].Name)
	y := int32(pos)
	for s := range q.shards {
		hs, ws := q.holders[s*r:s*r+r], q.weights[s*r:s*r+r]
		for k := range hs {
			if hs[k] >= y {
				hs[k]++
			}
		}
		w := Mix64(hy ^ Mix64(uint64(s)+0x9e3779b97f4a7c15))
		if w < ws[r-1] || (w == ws[r-1] && y > hs[r-1]) {
			continue
		}
		j := r - 1
		for j > 0 && (ws[j-1] < w || (ws[j-1] == w && hs[j-1] > y)) {
			ws[j], hs[j] = ws[j-1], hs[j-1]
			j--
		}
		ws[j], hs[j] = w, y
	}
	q.index2()
	return q, nil
}

func (p *Placement) leave(members []Member) (*Placement, error) {
	ms, err := sortedMembers(members)
	if err != nil {
		return nil, err
	}
	pos := -1
	for i, j := 0, 0; j < len(p.members); j++ {
		if i < len(ms) && ms[i] == p.members[j] {
			i++
			continue
		}
		if pos >= 0 {
			return NewPlacement(members, p.shards, p.requested)
		}
		pos = j
	}
	if pos < 0 {
		return NewPlacement(members, p.shards, p.requested)
	}
	q := p.shell(ms)
	x := int32(pos)
	hs := make([]uint64, len(ms))
	for i, m := range ms {
		hs[i] = nameHash(m.Name)
	}
	for k, h := range q.holders {
		if h > x {
			q.holders[k] = h - 1
		}
	}
	for _, s := range p.byMember[x] {
		q.rank(int(s), hs)
	}
	q.index2()
	return q, nil
}

// shell copies p's arrays for the member list ms (same shape).
func (p *Placement) shell(ms []Member) *Placement {
	q := &Placement{shards: p.shards, replicas: p.replicas, requested: p.requested, members: ms,
		index: make(map[string]int32, len(ms)), holders: slices.Clone(p.holders), weights: slices.Clone(p.weights)}
	for i, m := range ms {
		q.index[m.Name] = int32(i)
	}
	return q
}

// rank recomputes shard s's top R over q.members from scratch (hs holds
// the name hashes of q.members).
func (q *Placement) rank(s int, hs []uint64) {
	r := q.replicas
	seed := Mix64(uint64(s) + 0x9e3779b97f4a7c15)
	ws, ix := q.weights[s*r:s*r+r], q.holders[s*r:s*r+r]
	n := 0
	for i, h := range hs {
		w := Mix64(h ^ seed)
		if n == r && w <= ws[r-1] {
			continue
		}
		j := n
		if n < r {
			n++
		} else {
			j = r - 1
		}
		for j > 0 && ws[j-1] < w {
			ws[j], ix[j] = ws[j-1], ix[j-1]
			j--
		}
		ws[j], ix[j] = w, int32(i)
	}
}

// nameHash is FNV-1a of the member name, finalized by Mix64.
func nameHash(name string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(name))
	return Mix64(h.Sum64())
}

// Shards returns the number of shards.
func (p *Placement) Shards() int { return p.shards }

// Replicas returns the number of holders of each shard: R, or the member
// count when it is smaller.
func (p *Placement) Replicas() int { return p.replicas }

// Members returns the members sorted by name. Do not modify it.
func (p *Placement) Members() []Member { return p.members }

// Member returns the member of index i (an element of Holders).
func (p *Placement) Member(i int32) Member { return p.members[i] }

// Index returns the index of the named member, or -1.
func (p *Placement) Index(name string) int32 {
	if i, ok := p.index[name]; ok {
		return i
	}
	return -1
}

// Holders returns the member indices of shard s's holders, highest rank
// first. The slice aliases the placement: do not modify it.
func (p *Placement) Holders(s uint32) []int32 {
	r := p.replicas
	return p.holders[int(s)*r : int(s)*r+r]
}

// HolderNames returns the names of shard s's holders, highest rank first.
func (p *Placement) HolderNames(s uint32) []string {
	hs := p.Holders(s)
	out := make([]string, len(hs))
	for i, h := range hs {
		out[i] = p.members[h].Name
	}
	return out
}

// Holds reports whether the named member holds shard s, and at what rank.
func (p *Placement) Holds(name string, s uint32) (rank int, ok bool) {
	i, ok := p.index[name]
	if !ok {
		return 0, false
	}
	for r, h := range p.Holders(s) {
		if h == i {
			return r, true
		}
	}
	return 0, false
}

// ShardsOf returns the shards the named member holds, in increasing order.
func (p *Placement) ShardsOf(name string) []uint32 {
	i, ok := p.index[name]
	if !ok {
		return nil
	}
	return slices.Clone(p.byMember[i])
}

// ShardCounts returns, per member index, how many shards it holds.
func (p *Placement) ShardCounts() []int {
	c := make([]int, len(p.members))
	for _, h := range p.holders {
		c[h]++
	}
	return c
}

// Moved counts the (shard, holder) assignments of q that p does not have:
// the shard copies that must be loaded to go from p to q. Members are
// compared by name.
func (p *Placement) Moved(q *Placement) int {
	n := 0
	for s := range q.shards {
		for _, h := range q.Holders(uint32(s)) {
			if s >= p.shards {
				n++
				continue
			}
			if _, ok := p.Holds(q.members[h].Name, uint32(s)); !ok {
				n++
			}
		}
	}
	return n
}

// PlacementCache remembers the last placement computed, so that nodes
// sharing it (the simulation's thousands of in-process nodes, or the agent
// and geniectl in one process) compute each member set once. It is safe
// for concurrent use.
type PlacementCache struct {
	mu   sync.Mutex
	last *Placement
}

// Get returns the placement of members, computed or remembered.
func (c *PlacementCache) Get(members []Member, shards, replicas int) (*Placement, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if p := c.last; p != nil && p.shards == shards && p.replicas == min(replicas, len(members)) && sameMembers(p.members, members) {
		return p, nil
	}
	var p *Placement
	var err error
	if c.last != nil && c.last.shards == shards && c.last.requested == replicas {
		p, err = c.last.Next(members)
	} else {
		p, err = NewPlacement(members, shards, replicas)
	}
	if err != nil {
		return nil, err
	}
	c.last = p
	return p, nil
}

// sameMembers reports whether sorted equals ms as a set.
func sameMembers(sorted, ms []Member) bool {
	if len(sorted) != len(ms) {
		return false
	}
	for _, m := range ms {
		i, ok := slices.BinarySearchFunc(sorted, m.Name, func(a Member, name string) int { return strings.Compare(a.Name, name) })
		if !ok || sorted[i] != m {
			return false
		}
	}
	return true
}
