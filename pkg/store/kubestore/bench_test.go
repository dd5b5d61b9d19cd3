package kubestore_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/cni-genie/cni-genie/pkg/store"
	"github.com/cni-genie/cni-genie/pkg/store/etcdstore/etcdtest"
	"github.com/cni-genie/cni-genie/pkg/store/kubestore"
	"github.com/cni-genie/cni-genie/pkg/store/storetest"
	"github.com/cni-genie/cni-genie/pkg/testutil/kubeapi"
	"github.com/cni-genie/cni-genie/pkg/vpc"
)

// BenchmarkEndpointRecord compares the forms an endpoint record can take,
// in one run (see doc.go for the figures and the choice):
//
//   - etcd: etcdstore.PutEndpoint on an embedded etcd, the baseline;
//   - kube-crd: kubestore.PutEndpoint, a VPCEndpoint plus an EndpointIndex;
//   - kube-pod-annotation: what a pod-derived record costs, a merge patch
//     of the pod's network-status annotation (as genie writes it).
//
// Besides ns/op it reports store-B/op, the bytes the API server keeps in
// etcd per record (read back from etcd), and watch-B/op, the bytes a node
// agent's watch receives per record: label-selected VPCEndpoint events of
// one VPC, or Pod events (a pod-derived design must watch all pods).
//
//	go test -run '^$' -bench EndpointRecord -benchtime 300x ./pkg/store/kubestore/
func BenchmarkEndpointRecord(b *testing.B) {
	b.Run("etcd", func(b *testing.B) {
		srv, err := etcdtest.Start()
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(srv.Stop)
		prefix := etcdtest.UniquePrefix(b)
		s := srv.NewStore(b, prefix)
		benchPut(b, s)
		cli, err := clientv3.New(clientv3.Config{Endpoints: srv.Endpoints()})
		if err != nil {
			b.Fatal(err)
		}
		defer cli.Close()
		n := etcdBytes(b, cli, prefix+"/endpoints/", prefix+"/endpoint-ips/")
		b.ReportMetric(float64(n)/float64(b.N), "store-B/op")
	})
	b.Run("kube-crd", func(b *testing.B) {
		srv := server(b)
		sc := scope()
		s := open(b, srv.RESTConfig(), sc)
		w := startWatch(b, srv.RESTConfig(), fmt.Sprintf("/apis/%s/%s/vpcendpoints", kubestore.Group, kubestore.Version),
			kubestore.LabelScope+"="+sc+","+kubestore.LabelVPC+"=bench")
		benchPut(b, s)
		w.report(b)
		cli := etcdClient(b, srv)
		n := etcdBytes(b, cli, "/registry/"+kubestore.Group+"/vpcendpoints/"+sc+".", "/registry/"+kubestore.Group+"/endpointindexes/"+sc+".")
		b.ReportMetric(float64(n)/float64(b.N), "store-B/op")
	})
	b.Run("kube-pod-annotation", func(b *testing.B) {
		srv := server(b)
		cfg := rest.CopyConfig(srv.RESTConfig())
		cfg.QPS = -1 // no client-side limiter, as kubestore
		cs, err := kubernetes.NewForConfig(cfg)
		if err != nil {
			b.Fatal(err)
		}
		ns := srv.CreateNamespace(b, "bench")
		ctx := b.Context()
		for i := range b.N {
			pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("p%d", i)},
				Spec: corev1.PodSpec{NodeName: "n1", Containers: []corev1.Container{{Name: "c", Image: "registry.k8s.io/pause:3.10"}}}}
			if _, err := cs.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
				b.Fatal(err)
			}
		}
		cli := etcdClient(b, srv)
		before := etcdBytes(b, cli, "/registry/pods/"+ns+"/")
		w := startWatch(b, srv.RESTConfig(), "/api/v1/namespaces/"+ns+"/pods", "")
		b.ResetTimer()
		for i := range b.N {
			ip := benchIP(i)
			st := fmt.Sprintf(`[{"name":"default/vpc-bench","interface":"eth1","ips":[%q],"mac":"02:00:0a:01:%02x:%02x","dns":{}}]`,
				ip, byte(i>>8), byte(i))
			patch := fmt.Sprintf(`{"metadata":{"annotations":{"k8s.v1.cni.cncf.io/network-status":%q}}}`, st)
			if _, err := cs.CoreV1().Pods(ns).Patch(ctx, fmt.Sprintf("p%d", i), types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
				b.Fatal(err)
			}
		}
		b.StopTimer()
		w.report(b)
		after := etcdBytes(b, cli, "/registry/pods/"+ns+"/")
		b.ReportMetric(float64(after-before)/float64(b.N), "store-B/op")
		b.ReportMetric(float64(after)/float64(b.N), "pod-B")
	})
}

// benchIP is the i-th address of 10.1.0.0/16 after the network and
// gateway addresses.
func benchIP(i int) netip.Addr {
	v := uint32(10)<<24 | 1<<16 | uint32(i+2)
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// benchPut puts b.N new endpoints into vpc "bench", claiming blocks
// outside the timer as they fill.
func benchPut(b *testing.B, s store.Store) {
	ctx := b.Context()
	storetest.MustVPC(b, s, "bench", "10.1.0.0/16")
	storetest.MustSubnet(b, s, "bench", "web", "10.1.0.0/16")
	b.ResetTimer()
	for i := range b.N {
		ip := benchIP(i)
		if i == 0 || ip.As4()[3]%64 == 0 {
			b.StopTimer()
			if _, err := s.ClaimBlockContaining(ctx, "bench", "web", "n1", ip); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
		}
		e := vpc.Endpoint{VPC: "bench", Subnet: "web", ID: fmt.Sprintf("%064x/eth1", i), PodNamespace: "default",
			PodName: fmt.Sprintf("pod-%d", i), Interface: "eth1", IP: ip, MAC: []byte{2, 0, 10, 1, byte(i >> 8), byte(i)}, Node: "n1"}
		if _, err := s.PutEndpoint(ctx, e); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
}

func etcdClient(b *testing.B, srv *kubeapi.Server) *clientv3.Client {
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{srv.EtcdURL()}})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cli.Close() })
	return cli
}

// etcdBytes sums the sizes of the keys and values under the prefixes.
func etcdBytes(b *testing.B, cli *clientv3.Client, prefixes ...string) int64 {
	var n int64
	for _, p := range prefixes {
		r, err := cli.Get(b.Context(), p, clientv3.WithPrefix())
		if err != nil {
			b.Fatal(err)
		}
		for _, kv := range r.Kvs {
			n += int64(len(kv.Key) + len(kv.Value))
		}
	}
	return n
}

// rawWatch counts the bytes and events of a watch stream, as a node agent
// would receive them.
type rawWatch struct {
	bytes, events atomic.Int64
	cancel        context.CancelFunc
}

func startWatch(b *testing.B, cfg *rest.Config, path, selector string) *rawWatch {
	hc, err := rest.HTTPClientFor(cfg)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	b.Cleanup(cancel)
	q := url.Values{"watch": {"1"}, "allowWatchBookmarks": {"false"}}
	if selector != "" {
		q.Set("labelSelector", selector)
	}
	// Start from now: the current resourceVersion of the collection.
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, cfg.Host+path+"?limit=1&"+url.Values{"labelSelector": {selector}}.Encode(), nil)
	resp, err := hc.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	var rv struct {
		Metadata struct {
			ResourceVersion string `json:"resourceVersion"`
		} `json:"metadata"`
	}
	decodeJSON(b, resp, &rv)
	q.Set("resourceVersion", rv.Metadata.ResourceVersion)
	req, _ = http.NewRequestWithContext(ctx, http.MethodGet, cfg.Host+path+"?"+q.Encode(), nil)
	resp, err = hc.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	w := &rawWatch{cancel: cancel}
	go func() {
		defer resp.Body.Close()
		r := bufio.NewReaderSize(resp.Body, 1<<20)
		for {
			line, err := r.ReadBytes('\n')
			if len(line) > 0 {
				w.bytes.Add(int64(len(line)))
				if strings.Contains(string(line), `"type":"ADDED"`) || strings.Contains(string(line), `"type":"MODIFIED"`) {
					w.events.Add(1)
				}
			}
			if err != nil {
				return
			}
		}
	}()
	return w
}

// report waits for b.N events and reports the bytes per event.
func (w *rawWatch) report(b *testing.B) {
	deadline := time.Now().Add(30 * time.Second)
	for w.events.Load() < int64(b.N) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	w.cancel()
	if got := w.events.Load(); got < int64(b.N) {
		b.Fatalf("watch saw %d events, want %d", got, b.N)
	}
	b.ReportMetric(float64(w.bytes.Load())/float64(b.N), "watch-B/op")
}

func decodeJSON(b *testing.B, resp *http.Response, v any) {
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b.Fatalf("GET %s: %s", resp.Request.URL, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		b.Fatal(err)
	}
}
