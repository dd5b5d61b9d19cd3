package directory

import (
	"context"
	"errors"
	"slices"
	"sync"
)

// ErrSourceCompacted is sent in-band by a Source watch whose start
// revision is gone: list again.
var ErrSourceCompacted = errors.New("source revision compacted")

// EventType says what happened to a record in a Source.
type EventType int

const (
	// EventPut: the record was created or changed.
	EventPut EventType = iota + 1
	// EventDelete: the record was deleted; the event carries its key and
	// the deletion's revision as Record.Version.
	EventDelete
	// EventError: the watch failed (Err is set) and its channel closes
	// after this event.
	EventError
)

// SourceEvent is one change of a record in a Source.
type SourceEvent struct {
	Type   EventType
	Record Record
	// Revision is the source revision of the change, or a lower safe
	// resume point (see Source.WatchShards): watching again from it loses
	// nothing.
	Revision int64
	Err      error
}

// Source is the durable truth the holders load their shards from: the
// store, laid out by shard so that a holder lists and watches only the
// shards it holds (doc.go describes the etcd and Kubernetes layouts).
// Records carry the shard of their key for the source's shard count, which
// must equal the directory's.
type Source interface {
	// ListShards returns the records of the given shards and the
	// revision of the listing.
	ListShards(ctx context.Context, shards []uint32) ([]Record, int64, error)
	// WatchShards streams the changes of the given shards made after
	// fromRevision, until ctx ends or an EventError. Changes of one key
	// come in revision order; a source that merges several streams may
	// interleave shards out of order, and then sets each event's
	// Revision to a safe resume point (every change up to it delivered),
	// which may lag the record's own Version.
	// The shard set is fixed for the watch's lifetime: to change it,
	// cancel and watch the new set from a revision no later than the
	// last event applied and the listing of any shard added; events seen
	// twice are harmless because versions only grow.
	WatchShards(ctx context.Context, shards []uint32, fromRevision int64) <-chan SourceEvent
}

// MemSource is an in-memory Source: the reference implementation, used by
// the tests and the simulation. Records are kept per shard; every change
// gets the next revision, which becomes the record's Version.
type MemSource struct {
	shards int

	mu        sync.Mutex
	rev       int64
	byShard   []map[Key]Record
	history   []SourceEvent // every change since compacted
	compacted int64
	watchers  map[*memWatch]struct{}
	lists     int // ListShards calls, for tests
	listed    int // shards listed, for tests
}

type memWatch struct {
	shards map[uint32]bool
	ch     chan SourceEvent
	mu     sync.Mutex
	queue  []SourceEvent
	wake   chan struct{}
}

// NewMemSource returns an empty MemSource for shards shards.
func NewMemSource(shards int) *MemSource {
	s := &MemSource{shards: shards, byShard: make([]map[Key]Record, shards), watchers: map[*memWatch]struct{}{}}
	for i := range s.byShard {
		s.byShard[i] = map[Key]Record{}
	}
	return s
}

// Put stores r (its Version is replaced by the new revision) and returns
// the stored record.
func (s *MemSource) Put(r Record) Record {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rev++
	r.Version = uint64(s.rev)
	s.byShard[r.Shard(s.shards)][r.Key] = r
	s.emitLocked(SourceEvent{Type: EventPut, Record: r, Revision: s.rev})
	return r
}

// Delete removes the record of k, if any.
func (s *MemSource) Delete(k Key) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.byShard[k.Shard(s.shards)]
	if _, ok := m[k]; !ok {
		return
	}
	delete(m, k)
	s.rev++
	s.emitLocked(SourceEvent{Type: EventDelete, Record: Record{Key: k, Version: uint64(s.rev)}, Revision: s.rev})
}

// Get returns the stored record of k.
func (s *MemSource) Get(k Key) (Record, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.byShard[k.Shard(s.shards)][k]
	return r, ok
}

// Listed returns how many ListShards calls were made and how many shards
// they listed in total.
func (s *MemSource) Listed() (calls, shards int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lists, s.listed
}

func (s *MemSource) emitLocked(ev SourceEvent) {
	s.history = append(s.history, ev)
	sh := ev.Record.Shard(s.shards)
	for w := range s.watchers {
		if w.shards[sh] {
			w.push(ev)
		}
	}
}

// ListShards implements Source.
func (s *MemSource) ListShards(ctx context.Context, shards []uint32) ([]Record, int64, error) {
	if err := ctx.Err(); err != nil {
		return nil, 0, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lists++
	s.listed += len(shards)
	var out []Record
	for _, sh := range shards {
		if int(sh) >= s.shards {
			continue
		}
		for _, r := range s.byShard[sh] {
			out = append(out, r)
		}
	}
	slices.SortFunc(out, func(a, b Record) int { return int(int64(a.Version) - int64(b.Version)) })
	return out, s.rev, nil
}

// WatchShards implements Source.
func (s *MemSource) WatchShards(ctx context.Context, shards []uint32, fromRevision int64) <-chan SourceEvent {
	w := &memWatch{shards: map[uint32]bool{}, ch: make(chan SourceEvent), wake: make(chan struct{}, 1)}
	for _, sh := range shards {
		w.shards[sh] = true
	}
	s.mu.Lock()
	if fromRevision < s.compacted {
		s.mu.Unlock()
		ch := make(chan SourceEvent, 1)
		ch <- SourceEvent{Type: EventError, Err: ErrSourceCompacted}
		close(ch)
		return ch
	}
	for _, ev := range s.history {
		if ev.Revision > fromRevision && w.shards[ev.Record.Shard(s.shards)] {
			w.queue = append(w.queue, ev)
		}
	}
	s.watchers[w] = struct{}{}
	s.mu.Unlock()
	go func() {
		defer close(w.ch)
		defer func() {
			s.mu.Lock()
			delete(s.watchers, w)
			s.mu.Unlock()
		}()
		for {
			w.mu.Lock()
			q := w.queue
			w.queue = nil
			w.mu.Unlock()
			for _, ev := range q {
				select {
				case w.ch <- ev:
				case <-ctx.Done():
					return
				}
				if ev.Type == EventError {
					return
				}
			}
			select {
			case <-w.wake:
			case <-ctx.Done():
				return
			}
		}
	}()
	return w.ch
}

func (w *memWatch) push(ev SourceEvent) {
	w.mu.Lock()
	w.queue = append(w.queue, ev)
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// Compact drops the change history up to the current revision, as etcd's
// compaction does; a later watch from an older revision gets
// ErrSourceCompacted. The simulation calls it after bulk loading.
func (s *MemSource) Compact() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.history = nil
	s.compacted = s.rev
}

// BreakWatches ends every open watch with ErrSourceCompacted and
// compacts the history, as an etcd compaction under a lagging watcher
// does. Tests use it with PutUnwatched to model a change a holder's watch
// missed.
func (s *MemSource) BreakWatches() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.history, s.compacted = nil, s.rev
	for w := range s.watchers {
		w.mu.Lock()
		w.queue = []SourceEvent{{Type: EventError, Err: ErrSourceCompacted}}
		w.mu.Unlock()
		select {
		case w.wake <- struct{}{}:
		default:
		}
		delete(s.watchers, w)
	}
}

// PutUnwatched is Put without telling the watches: a change lost to a
// compaction.
func (s *MemSource) PutUnwatched(r Record) Record {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rev++
	r.Version = uint64(s.rev)
	s.byShard[r.Shard(s.shards)][r.Key] = r
	return r
}

// Len returns the number of records stored.
func (s *MemSource) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, m := range s.byShard {
		n += len(m)
	}
	return n
}
