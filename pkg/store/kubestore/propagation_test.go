package kubestore_test

import (
	"fmt"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cni-genie/cni-genie/pkg/store"
	"github.com/cni-genie/cni-genie/pkg/store/etcdstore/etcdtest"
	"github.com/cni-genie/cni-genie/pkg/store/storetest"
	"github.com/cni-genie/cni-genie/pkg/vpc"
)

// BenchmarkPropagation measures, per backend in one run, the time from
// the start of PutEndpoint until another client's WatchEndpoints of the
// VPC delivers the endpoint (p50/p99 over b.N sequential puts), and the
// throughput of 20 concurrent putters:
//
//	go test -run '^$' -bench Propagation -benchtime 300x ./pkg/store/kubestore/
func BenchmarkPropagation(b *testing.B) {
	backends := []struct {
		name string
		open func(b *testing.B) func() store.Store
	}{
		{"etcd", func(b *testing.B) func() store.Store {
			srv, err := etcdtest.Start()
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(srv.Stop)
			prefix := etcdtest.UniquePrefix(b)
			return func() store.Store { return srv.NewStore(b, prefix) }
		}},
		{"kube", func(b *testing.B) func() store.Store {
			cfg := server(b).RESTConfig()
			sc := scope()
			return func() store.Store { return open(b, cfg, sc) }
		}},
	}
	for _, be := range backends {
		b.Run(be.name+"/watch", func(b *testing.B) {
			openStore := be.open(b)
			s, w := openStore(), openStore()
			claimAll(b, s, b.N)
			_, rev, err := w.ListEndpoints(b.Context(), "bench")
			if err != nil {
				b.Fatal(err)
			}
			start := make([]time.Time, b.N)
			lat := make([]time.Duration, 0, b.N)
			done := make(chan struct{})
			var mu sync.Mutex
			go func() {
				defer close(done)
				for ev := range w.WatchEndpoints(b.Context(), "bench", rev) {
					now := time.Now()
					if ev.Type == store.EventError {
						b.Error(ev.Err)
						return
					}
					var i int
					fmt.Sscanf(ev.Endpoint.PodName, "pod-%d", &i)
					mu.Lock()
					lat = append(lat, now.Sub(start[i]))
					n := len(lat)
					mu.Unlock()
					if n == b.N {
						return
					}
				}
			}()
			b.ResetTimer()
			for i := range b.N {
				mu.Lock()
				start[i] = time.Now()
				mu.Unlock()
				if _, err := s.PutEndpoint(b.Context(), benchEndpoint(i)); err != nil {
					b.Fatal(err)
				}
			}
			select {
			case <-done:
			case <-time.After(time.Minute):
				b.Fatal("watch did not deliver every endpoint")
			}
			b.StopTimer()
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
		})
		b.Run(be.name+"/put-20-concurrent", func(b *testing.B) {
			openStore := be.open(b)
			s := openStore()
			claimAll(b, s, b.N)
			var next atomic.Int64
			b.SetParallelism(max(1, 20/runtime.GOMAXPROCS(0))) // 20 goroutines
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					i := int(next.Add(1) - 1)
					if _, err := s.PutEndpoint(b.Context(), benchEndpoint(i)); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

func benchEndpoint(i int) vpc.Endpoint {
	return vpc.Endpoint{VPC: "bench", Subnet: "web", ID: fmt.Sprintf("%064x/eth1", i), PodNamespace: "default",
		PodName: fmt.Sprintf("pod-%d", i), Interface: "eth1", IP: benchIP(i), MAC: []byte{2, 0, 10, 1, byte(i >> 8), byte(i)}, Node: "n1"}
}

// claimAll creates vpc "bench", subnet "web" 10.1.0.0/16 and the blocks
// of the first n addresses for node n1.
func claimAll(b *testing.B, s store.Store, n int) {
	storetest.MustVPC(b, s, "bench", "10.1.0.0/16")
	storetest.MustSubnet(b, s, "bench", "web", "10.1.0.0/16")
	for i := 0; i < n; i += 64 {
		if _, err := s.ClaimBlockContaining(b.Context(), "bench", "web", "n1", benchIP(i)); err != nil {
			b.Fatal(err)
		}
	}
	if _, err := s.ClaimBlockContaining(b.Context(), "bench", "web", "n1", benchIP(n-1)); err != nil {
		b.Fatal(err)
	}
}
