package directory

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"
)

// BenchmarkGRPCLookup measures Node.Lookup over gRPC on 127.0.0.1 (a key
// whose first holder is another node) against the baseline of a bare TCP
// round trip of the same size on loopback, interleaved in pairs in the
// same run. It reports p50 and p99 of both and their ratio.
func BenchmarkGRPCLookup(b *testing.B) {
	const shards = 256
	src := NewMemSource(shards)
	tr := NewGRPCTransport()
	defer tr.Close()
	var ms []Member
	var nodes []*Node
	for i := range 3 {
		l, err := ListenRPC("127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		m := Member{Name: fmt.Sprintf("b-%d", i), RPC: netip.MustParseAddrPort(l.Addr().String())}
		nd, err := NewNode(Config{Self: m, Shards: shards, Replicas: 1, Source: src, Transport: tr})
		if err != nil {
			b.Fatal(err)
		}
		s := NewGRPCServer(nd)
		defer s.Stop()
		go s.Serve(l)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		go nd.Run(ctx)
		ms, nodes = append(ms, m), append(nodes, nd)
	}
	recs := putEndpoints(src, 1000, ms)
	for _, nd := range nodes {
		nd.SetMembers(ms)
	}
	waitFor(b, 5*time.Second, "loaded", func() bool {
		total := 0
		for _, nd := range nodes {
			total += nd.Records()
		}
		return total == len(recs)
	})
	p := nodes[0].Placement()
	var remote []Key
	for _, r := range recs {
		if p.HolderNames(r.Shard(shards))[0] != "b-0" {
			remote = append(remote, r.Key)
		}
	}
	// The baseline: a TCP echo of a lookup-sized message.
	echo, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer echo.Close()
	go func() {
		for {
			c, err := echo.Accept()
			if err != nil {
				return
			}
			go io.Copy(c, c)
		}
	}()
	conn, err := net.Dial("tcp", echo.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	msg, buf := make([]byte, 64), make([]byte, 64)

	var lk, rt []time.Duration
	ctx := context.Background()
	for i := 0; b.Loop(); i++ {
		t0 := time.Now()
		if _, err := nodes[0].Lookup(ctx, remote[i%len(remote)]); err != nil {
			b.Fatal(err)
		}
		lk = append(lk, time.Since(t0))
		t0 = time.Now()
		if _, err := conn.Write(msg); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(conn, buf); err != nil {
			b.Fatal(err)
		}
		rt = append(rt, time.Since(t0))
	}
	pct := func(d []time.Duration, q float64) float64 {
		s := slices.Clone(d)
		slices.Sort(s)
		return float64(s[int(q*float64(len(s)-1))].Microseconds())
	}
	b.ReportMetric(pct(lk, 0.5), "lookup-p50-µs")
	b.ReportMetric(pct(lk, 0.99), "lookup-p99-µs")
	b.ReportMetric(pct(rt, 0.5), "tcp-rtt-p50-µs")
	b.ReportMetric(pct(rt, 0.99), "tcp-rtt-p99-µs")
	b.ReportMetric(pct(lk, 0.5)/max(1, pct(rt, 0.5)), "p50-ratio")
}
