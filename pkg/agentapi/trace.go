package agentapi

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/containernetworking/cni/pkg/types"
)

// PathTrace streams the data plane's drops (geniectl trace).
const PathTrace = "/v1/trace"

// TraceRequest selects the drops a trace client wants; empty fields match
// everything.
type TraceRequest struct {
	// VPC keeps drops in that VPC (by VNI) only.
	VPC string `json:"vpc,omitempty"`
	// Pod keeps drops of one pod's VPC interfaces only: "namespace/name"
	// or a container ID (or a unique prefix of at least 6 characters). A
	// drop belongs to a pod when it was sent by one of its interfaces, or
	// arrived from the underlay for one of its addresses. The agent refuses
	// a pod that has no VPC attachment on its node.
	Pod string `json:"pod,omitempty"`
	// Reasons keeps drops for these reasons only (names as in the
	// genie_datapath_drops_total metric, e.g. SPOOFED_IP).
	Reasons []string `json:"reasons,omitempty"`
}

// TracePod names the pod interface a drop belongs to.
type TracePod struct {
	Namespace   string `json:"namespace,omitempty"`
	Name        string `json:"name,omitempty"`
	ContainerID string `json:"containerID"`
	// Interface is the pod-side interface name (e.g. net1).
	Interface string `json:"interface"`
}

// TraceEvent is one dropped packet, as the agent reports it.
type TraceEvent struct {
	Time time.Time `json:"time"`
	// Node is the agent's node.
	Node string `json:"node"`
	// Reason is why the data plane dropped it (e.g. SPOOFED_IP).
	Reason string `json:"reason"`
	// Direction is "from-pod" (sent by a pod, dropped on its veth) or
	// "from-underlay" (arrived on the uplink).
	Direction string `json:"direction"`
	// Interface is the node's interface it arrived on: the pod's host-side
	// veth or the uplink (its name, or the ifindex if it has none any more).
	Interface string `json:"interface"`
	// VNI and VPC are the packet's VPC (0 and empty when unknown).
	VNI uint32 `json:"vni,omitempty"`
	VPC string `json:"vpc,omitempty"`
	// Pod is the local pod interface the drop belongs to, if any.
	Pod *TracePod `json:"pod,omitempty"`
	// OuterSrc is the sending node's underlay address (Geneve).
	OuterSrc string `json:"outerSrc,omitempty"`
	// Protocol is "tcp", "udp", "icmp", "arp", "ipv4/<n>" or
	// "ethertype/0x<hex>".
	Protocol string `json:"protocol"`
	// Src and Dst are the IPv4 addresses (ARP: sender and target).
	Src string `json:"src,omitempty"`
	Dst string `json:"dst,omitempty"`
	// SrcPort and DstPort are TCP/UDP ports.
	SrcPort uint16 `json:"srcPort,omitempty"`
	DstPort uint16 `json:"dstPort,omitempty"`
	// ICMPType and ICMPCode are set for ICMP.
	ICMPType *uint8 `json:"icmpType,omitempty"`
	ICMPCode *uint8 `json:"icmpCode,omitempty"`
	// SrcMAC and DstMAC are the (inner) Ethernet addresses.
	SrcMAC string `json:"srcMAC,omitempty"`
	DstMAC string `json:"dstMAC,omitempty"`
	// Length is the packet's length in bytes.
	Length uint32 `json:"length"`
}

// TraceMessage is one line of a trace stream: an event, or the number of
// events lost since the previous message (the data plane's ring was full,
// or this client read too slowly).
type TraceMessage struct {
	Event *TraceEvent `json:"event,omitempty"`
	Lost  uint64      `json:"lost,omitempty"`
}

// Tracer is implemented by a Backend that can stream drops. Trace returns
// a bad filter as a *types.Error with code ErrInvalidNetworkConfig before
// calling send; then it calls send for every message until ctx ends or send
// fails, and returns nil.
type Tracer interface {
	Trace(ctx context.Context, req *TraceRequest, send func(*TraceMessage) error) error
}

// serveTrace streams newline-delimited TraceMessages (application/x-ndjson),
// flushed as they come.
func serveTrace(t Tracer) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var req TraceRequest
		data, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		if err == nil && len(data) > 0 {
			err = json.Unmarshal(data, &req)
		}
		if err != nil {
			writeError(w, &types.Error{Code: types.ErrDecodingFailure, Msg: "decoding request: " + err.Error()})
			return
		}
		rc := http.NewResponseController(w)
		started := false
		enc := json.NewEncoder(w)
		err = t.Trace(r.Context(), &req, func(m *TraceMessage) error {
			if !started {
				started = true
				w.Header().Set("Content-Type", "application/x-ndjson")
				w.WriteHeader(http.StatusOK)
			}
			if err := enc.Encode(m); err != nil {
				return err
			}
			return rc.Flush()
		})
		if err != nil && !started {
			writeError(w, err)
		}
	}
}

// Trace streams the agent's drops matching req to fn until ctx ends, fn
// returns an error (returned as is), or the agent goes away. The agent
// answers at once with a first message (Lost 0) once the trace is on.
func (c *Client) Trace(ctx context.Context, req *TraceRequest, fn func(*TraceMessage) error) error {
	body, err := json.Marshal(req)
	if err != nil {
		return fmt.Errorf("encoding trace request: %w", err)
	}
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://genied"+PathTrace, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("building trace request: %w", err)
	}
	hreq.Header.Set("Content-Type", "application/json")
	// The stream has no end: no overall timeout, only the dial's.
	hc := &http.Client{Transport: c.http.Transport}
	hresp, err := hc.Do(hreq)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("%w at %s: %v", ErrAgentUnavailable, c.socket, err)
	}
	defer hresp.Body.Close()
	if hresp.StatusCode/100 != 2 {
		data, _ := io.ReadAll(io.LimitReader(hresp.Body, 1<<20))
		return decodeError(data, hresp.StatusCode)
	}
	sc := bufio.NewScanner(hresp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var m TraceMessage
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			return fmt.Errorf("decoding trace message: %w", err)
		}
		if err := fn(&m); err != nil {
			return err
		}
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if err := sc.Err(); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("reading trace stream: %w", err)
	}
	return fmt.Errorf("trace stream ended: the agent at %s stopped", c.socket)
}
