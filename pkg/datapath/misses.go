package datapath

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/cilium/ebpf/ringbuf"
)

// Miss is an address {VNI, IP} the data plane needed and did not find: the
// destination of a local pod's packet (dropped as NO_ROUTE) or the inner
// source of a Geneve packet from the underlay (dropped as FORGED, or in
// directory mode accepted from a member and then verified). In directory
// mode the agent resolves it on demand from the directory and installs it
// with LearnRemote, so the next packet goes direct; the directory alone
// decides, so a forged source stays dropped. The data plane reports an
// address at most once a second. In vpc-sync mode nothing reads the
// reports: the agent pushes every remote endpoint of its VPCs from the
// store watch, so a miss is an address not (yet) in use.
type Miss struct {
	VNI uint32
	IP  netip.Addr
}

// ErrMissesClosed is returned by MissReader.Read after Close.
var ErrMissesClosed = errors.New("miss reader closed")

// MissReader reads Miss reports from the data plane's ring buffer. Use one
// reader per Datapath; it is not safe for concurrent Reads.
type MissReader struct {
	rd *ringbuf.Reader
}

// Misses opens a reader of NO_ROUTE miss reports. Reports that arrive while
// nobody reads are kept up to the ring buffer's size (64 KiB, about 4000
// reports), later ones are lost (the packets are dropped and counted anyway).
func (d *Datapath) Misses() (*MissReader, error) {
	rd, err := ringbuf.NewReader(d.lxc.GenieMisses)
	if err != nil {
		return nil, fmt.Errorf("open miss reader: %w", err)
	}
	return &MissReader{rd: rd}, nil
}

// Read blocks until the next report, the deadline set by SetDeadline
// (os.ErrDeadlineExceeded) or Close (ErrMissesClosed).
func (r *MissReader) Read() (Miss, error) {
	rec, err := r.rd.Read()
	switch {
	case errors.Is(err, ringbuf.ErrClosed):
		return Miss{}, ErrMissesClosed
	case err != nil:
		return Miss{}, fmt.Errorf("read miss: %w", err)
	case len(rec.RawSample) < 8:
		return Miss{}, fmt.Errorf("read miss: short record of %d bytes", len(rec.RawSample))
	}
	return Miss{
		VNI: binary.NativeEndian.Uint32(rec.RawSample[0:4]),
		IP:  netip.AddrFrom4([4]byte(rec.RawSample[4:8])),
	}, nil
}

// SetDeadline makes Read return os.ErrDeadlineExceeded after t (zero: none).
func (r *MissReader) SetDeadline(t time.Time) { r.rd.SetDeadline(t) }

// Close stops the reader; a blocked Read returns ErrMissesClosed.
func (r *MissReader) Close() error { return r.rd.Close() }
