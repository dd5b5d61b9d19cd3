package kube_test

import (
	"path/filepath"
	"testing"

	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"

	"github.com/cni-genie/cni-genie/pkg/kube"
)

// BenchmarkInvocation measures the Kubernetes work of one genie ADD (read
// the pod, read a NAD, write network-status) on a real API server, with a
// service-account token. "fresh" builds the Client from the kubeconfig on
// disk each time, as genie does so that a rotated token is always picked up;
// "reused" is the baseline with one long-lived Client. Their ratio is the
// price of per-invocation clients.
func BenchmarkInvocation(b *testing.B) {
	e := setup(b)
	e.createPod(b, e.ns, "web", nil)
	e.createNAD(b, e.ns, "net1", `{"cniVersion":"1.0.0","name":"net1","type":"bridge"}`)
	path := filepath.Join(b.TempDir(), "kubeconfig")
	e.kubeconfig(b, path)
	st := []nadv1.NetworkStatus{{Name: "genie-default", Interface: "eth0", IPs: []string{"10.77.0.2"}, Default: true}}
	run := func(b *testing.B, c *kube.Client) {
		if _, err := c.GetPod(b.Context(), e.ns, "web"); err != nil {
			b.Fatal(err)
		}
		if _, err := c.GetNAD(b.Context(), e.ns, "net1"); err != nil {
			b.Fatal(err)
		}
		if err := c.SetNetworkStatus(b.Context(), e.ns, "web", st); err != nil {
			b.Fatal(err)
		}
	}
	b.Run("reused", func(b *testing.B) {
		c, err := kube.NewFromKubeconfig(path)
		if err != nil {
			b.Fatal(err)
		}
		for b.Loop() {
			run(b, c)
		}
	})
	b.Run("fresh", func(b *testing.B) {
		for b.Loop() {
			c, err := kube.NewFromKubeconfig(path)
			if err != nil {
				b.Fatal(err)
			}
			run(b, c)
		}
	})
}
