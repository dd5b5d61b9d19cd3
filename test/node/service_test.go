package node

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/cni-genie/cni-genie/pkg/service/kubesvc"
	"github.com/cni-genie/cni-genie/pkg/testutil/kubenode"
)

// serviceController checks what the chart deploys for services on the
// real node: the service controller's replicas run and one holds its
// Lease; a Service annotated with the VPC's NAD gets a VIP of the VPC; and
// the elected resolver (an agent, under the chart's genie-service-resolver
// admission binding) writes the labelled pod's attachment as its backend.
// It cleans up its pod and Service.
func (e *env) serviceController() {
	t := e.t
	ctx := context.Background()
	e.eventually(2*time.Minute, "Deployment genie-service-controller available", func() error {
		d, err := e.cs.AppsV1().Deployments("kube-system").Get(ctx, "genie-service-controller", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if d.Spec.Replicas == nil || d.Status.AvailableReplicas != *d.Spec.Replicas {
			return fmt.Errorf("%d available", d.Status.AvailableReplicas)
		}
		return nil
	})
	e.eventually(time.Minute, "a replica leads", func() error {
		l, err := e.cs.CoordinationV1().Leases("kube-system").Get(ctx, "genie-service-controller", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if l.Spec.HolderIdentity == nil || !strings.HasPrefix(*l.Spec.HolderIdentity, "genie-service-controller-") {
			return fmt.Errorf("holder %v", l.Spec.HolderIdentity)
		}
		return nil
	})

	p := kubenode.BusyboxPod(e.ns, "api-backend", e.n.Name, map[string]string{"k8s.v1.cni.cncf.io/networks": "nad-blue"})
	p.Labels = map[string]string{"app": "api"}
	if _, err := e.cs.CoreV1().Pods(e.ns).Create(ctx, p, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	defer e.deletePods("api-backend")
	if _, err := kubenode.WaitRunning(ctx, e.cs, e.ns, "api-backend", 2*time.Minute); err != nil {
		t.Fatal(err)
	}
	ips := e.checkPod(e.pod("api-backend"), map[string]*netIPNet{"eth0": clusterNet, "net1": vpcNet},
		map[string]string{"eth0": "cluster", "net1": e.ns + "/nad-blue"})

	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "api", Annotations: map[string]string{kubesvc.AnnotationNetwork: "nad-blue"}},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "api"},
			Ports: []corev1.ServicePort{{Port: 80, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromInt32(8080)}}},
	}
	if _, err := e.cs.CoreV1().Services(e.ns).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := e.cs.CoreV1().Services(e.ns).Delete(ctx, "api", metav1.DeleteOptions{}); err != nil {
			t.Errorf("delete service: %v", err)
		}
		e.eventually(time.Minute, "the VPC service removed with the Service", func() error {
			if out := e.geniectl("service", "list", "blue"); strings.Contains(out, kubesvc.Name(e.ns, "api")) {
				return fmt.Errorf("still listed:\n%s", out)
			}
			return nil
		})
	}()
	var vip netip.Addr
	e.eventually(time.Minute, "the Service's VPC VIP", func() error {
		s, err := e.cs.CoreV1().Services(e.ns).Get(ctx, "api", metav1.GetOptions{})
		if err != nil {
			return err
		}
		vip, err = netip.ParseAddr(s.Annotations[kubesvc.AnnotationVIP])
		return err
	})
	if !netip.MustParsePrefix("10.10.0.0/16").Contains(vip) || vpcNet.Contains(vip.AsSlice()) {
		t.Fatalf("VIP %s: want an address of vpc blue outside subnet %s", vip, vpcNet)
	}
	want := ips["net1"].String() + "@" + e.n.Name
	e.eventually(time.Minute, "the resolver's backend record", func() error {
		out := e.geniectl("service", "list", "blue")
		if !strings.Contains(out, vip.String()) || !strings.Contains(out, "80:8080/tcp") || !strings.Contains(out, want) {
			return fmt.Errorf("want %s with backend %s:\n%s", vip, want, out)
		}
		return nil
	})
	t.Logf("Service default/api: VIP %s in vpc blue, backend %s", vip, want)
}
