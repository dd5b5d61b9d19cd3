// Package kubesvc gives a standard Kubernetes Service a VIP in a VPC: a
// Service annotated genie.cni.io/network (a VPC attachment "vpc/subnet",
// or the name of a NetworkAttachmentDefinition of a genie VPC network) is
// mirrored as a service.Service of that VPC, whose backends are the
// selected pods' attachments on that network (their endpoint records,
// labelled at ADD), restricted to the Service's namespace. The VIP the
// store allocates is written back in the genie.cni.io/vip annotation.
//
// The same Service name may exist for the pod network and for a VPC: the
// Kubernetes Service keeps its ClusterIP (kube-proxy's), the VPC VIP is
// another address reached only from the VPC.
//
// One controller per cluster is enough, and it is idempotent (a restart
// re-lists everything). `geniectl service controller` runs it while its
// replica holds the service-controller leadership; the chart deploys two
// replicas with their own least-privilege account (patch Services, which
// the node agents may not).
package kubesvc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"

	"github.com/cni-genie/cni-genie/pkg/genie"
	"github.com/cni-genie/cni-genie/pkg/service"
	"github.com/cni-genie/cni-genie/pkg/store"
)

// Annotations of a Service.
const (
	// AnnotationNetwork selects the VPC: "vpc/subnet", or a
	// NetworkAttachmentDefinition "name" (in the Service's namespace) or
	// "namespace/name" whose config is a genie VPC network.
	AnnotationNetwork = "genie.cni.io/network"
	// AnnotationVIP is written by the controller: the VIP in the VPC.
	AnnotationVIP = "genie.cni.io/vip"
	// AnnotationError is written when the Service cannot be mirrored.
	AnnotationError = "genie.cni.io/error"
)

var nadGVR = schema.GroupVersionResource{Group: "k8s.cni.cncf.io", Version: "v1", Resource: "network-attachment-definitions"}

// Controller mirrors annotated Services into the store.
type Controller struct {
	Kube kubernetes.Interface
	// Dyn reads NetworkAttachmentDefinitions; nil allows only "vpc/subnet".
	Dyn dynamic.Interface
	// Store must implement store.ServiceStore.
	Store store.Store
	Log   *slog.Logger

	ss store.ServiceStore
}

func (c *Controller) log() *slog.Logger {
	if c.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return c.Log
}

// Name returns the genie service name of Service namespace/name: a DNS
// label unique per Service ("k8s-<namespace>-<name>", hashed if long).
func Name(namespace, name string) string {
	n := "k8s-" + namespace + "-" + name
	if len(n) <= 63 {
		return n
	}
	h := fnvHex(namespace + "/" + name)
	return strings.TrimRight(n[:63-len(h)-1], "-") + "-" + h
}

func fnvHex(s string) string {
	var h uint32 = 2166136261
	for i := 0; i < len(s); i++ {
		h ^= uint32(s[i])
		h *= 16777619
	}
	return fmt.Sprintf("%08x", h)
}

// Run watches Services until ctx ends.
func (c *Controller) Run(ctx context.Context) error {
	ss, ok := c.Store.(store.ServiceStore)
	if !ok {
		return fmt.Errorf("kubesvc: store %T has no services", c.Store)
	}
	c.ss = ss
	f := informers.NewSharedInformerFactory(c.Kube, 10*time.Minute)
	inf := f.Core().V1().Services().Informer()
	q := workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[string]())
	defer q.ShutDown()
	enqueue := func(obj any) {
		if k, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj); err == nil {
			q.Add(k)
		}
	}
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    enqueue,
		UpdateFunc: func(_, n any) { enqueue(n) },
		DeleteFunc: enqueue,
	}); err != nil {
		return err
	}
	f.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), inf.HasSynced) {
		return ctx.Err()
	}
	go wait.UntilWithContext(ctx, func(ctx context.Context) {
		for {
			k, quit := q.Get()
			if quit {
				return
			}
			err := c.sync(ctx, inf.GetIndexer(), k)
			if err != nil {
				c.log().Error("kubesvc: sync", "service", k, "err", err)
				q.AddRateLimited(k)
			} else {
				q.Forget(k)
			}
			q.Done(k)
		}
	}, time.Second)
	<-ctx.Done()
	return ctx.Err()
}

// sync mirrors one Service (key "namespace/name").
func (c *Controller) sync(ctx context.Context, idx cache.Indexer, key string) error {
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return nil
	}
	gname := Name(ns, name)
	obj, exists, err := idx.GetByKey(key)
	if err != nil {
		return err
	}
	var svc *corev1.Service
	if exists {
		svc = obj.(*corev1.Service)
	}
	if svc == nil || svc.Annotations[AnnotationNetwork] == "" {
		return c.removeAll(ctx, gname, "")
	}
	want, err := c.desired(ctx, svc, gname)
	if err != nil {
		// Bad input: report it on the object; retrying will not help.
		return c.annotate(ctx, svc, "", err.Error())
	}
	if err := c.removeAll(ctx, gname, want.VPC); err != nil {
		return err
	}
	have, err := c.ss.GetService(ctx, want.VPC, gname)
	switch {
	case err == nil && sameSpec(have, want):
		return c.annotate(ctx, svc, have.VIP.String(), "")
	case err == nil:
		// Changed: recreate, keeping the VIP.
		if !want.VIP.IsValid() {
			want.VIP = have.VIP
		}
		if err := c.ss.DeleteService(ctx, want.VPC, gname); err != nil && !errors.Is(err, store.ErrNotFound) {
			return err
		}
	case !errors.Is(err, store.ErrNotFound):
		return err
	}
	got, err := c.ss.CreateService(ctx, want)
	if err != nil {
		if errors.Is(err, store.ErrNotFound) || errors.Is(err, store.ErrConflict) || strings.Contains(err.Error(), "invalid") {
			return c.annotate(ctx, svc, "", err.Error())
		}
		return err
	}
	c.log().Info("kubesvc: mirrored", "service", key, "vpc", got.VPC, "vip", got.VIP)
	return c.annotate(ctx, svc, got.VIP.String(), "")
}

// desired translates a Service into the genie service it should have.
func (c *Controller) desired(ctx context.Context, svc *corev1.Service, gname string) (service.Service, error) {
	v, err := c.vpcOf(ctx, svc.Namespace, svc.Annotations[AnnotationNetwork])
	if err != nil {
		return service.Service{}, err
	}
	out := service.Service{VPC: v, Name: gname, Selector: svc.Spec.Selector, PodNamespace: svc.Namespace}
	if len(out.Selector) == 0 {
		return service.Service{}, fmt.Errorf("service %s/%s has no selector", svc.Namespace, svc.Name)
	}
	if svc.Spec.SessionAffinity == corev1.ServiceAffinityClientIP {
		out.Affinity = service.AffinityClientIP
	}
	if a := svc.Annotations[AnnotationVIP]; a != "" {
		// Keep the VIP across controller restarts and re-creations.
		if ip, err := netip.ParseAddr(a); err == nil {
			out.VIP = ip
		}
	}
	for _, p := range svc.Spec.Ports {
		sp := service.Port{Name: p.Name, Port: uint16(p.Port), Protocol: service.Protocol(p.Protocol)}
		switch {
		case p.TargetPort.IntValue() > 0:
			sp.TargetPort = uint16(p.TargetPort.IntValue())
		case p.TargetPort.String() != "" && p.TargetPort.String() != "0":
			return service.Service{}, fmt.Errorf("service %s/%s port %d: named target port %q is not supported on a vpc network", svc.Namespace, svc.Name, p.Port, p.TargetPort.String())
		}
		out.Ports = append(out.Ports, sp)
	}
	return out.WithDefaults(), nil
}

// vpcOf resolves the network annotation to a VPC name.
func (c *Controller) vpcOf(ctx context.Context, ns, ref string) (string, error) {
	ref = strings.TrimSpace(ref)
	if v, sn, ok := strings.Cut(ref, "/"); ok && c.isVPCRef(ctx, v, sn) {
		return v, nil
	}
	nadNS, nadName := ns, ref
	if a, b, ok := strings.Cut(ref, "/"); ok {
		nadNS, nadName = a, b
	}
	if c.Dyn == nil {
		return "", fmt.Errorf("network %q: not a vpc/subnet and no NetworkAttachmentDefinition client", ref)
	}
	u, err := c.Dyn.Resource(nadGVR).Namespace(nadNS).Get(ctx, nadName, metav1.GetOptions{})
	if err != nil {
		return "", fmt.Errorf("network %q: %w", ref, err)
	}
	cfg, _, _ := unstructuredString(u.Object, "spec", "config")
	n, err := genie.ParseNetwork([]byte(cfg), nadName, "NetworkAttachmentDefinition "+nadNS+"/"+nadName)
	if err != nil {
		return "", err
	}
	if !n.IsVPC() {
		return "", fmt.Errorf("network %q is not a genie vpc network", ref)
	}
	return n.VPC, nil
}

// isVPCRef reports whether "v/sn" names a subnet in the store (else it is
// a NAD "namespace/name").
func (c *Controller) isVPCRef(ctx context.Context, v, sn string) bool {
	_, err := c.Store.GetSubnet(ctx, v, sn)
	return err == nil
}

func unstructuredString(obj map[string]any, path ...string) (string, bool, error) {
	var cur any = obj
	for _, p := range path {
		m, ok := cur.(map[string]any)
		if !ok {
			return "", false, nil
		}
		cur = m[p]
	}
	s, ok := cur.(string)
	return s, ok, nil
}

// removeAll deletes the mirrored service gname from every VPC but keep.
func (c *Controller) removeAll(ctx context.Context, gname, keep string) error {
	all, _, err := c.ss.ListServices(ctx, "")
	if err != nil {
		return err
	}
	for _, s := range all {
		if s.Name == gname && s.VPC != keep {
			if err := c.ss.DeleteService(ctx, s.VPC, s.Name); err != nil && !errors.Is(err, store.ErrNotFound) {
				return err
			}
		}
	}
	return nil
}

func sameSpec(a, b service.Service) bool {
	if b.VIP.IsValid() && a.VIP != b.VIP {
		return false
	}
	a.VIP, b.VIP = netip.Addr{}, netip.Addr{}
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return string(x) == string(y)
}

// annotate records the VIP (or the error) on the Service.
func (c *Controller) annotate(ctx context.Context, svc *corev1.Service, vip, msg string) error {
	if svc.Annotations[AnnotationVIP] == vip && svc.Annotations[AnnotationError] == msg {
		return nil
	}
	patch := map[string]any{"metadata": map[string]any{"annotations": map[string]any{
		AnnotationVIP: nilIfEmpty(vip), AnnotationError: nilIfEmpty(msg),
	}}}
	b, _ := json.Marshal(patch)
	_, err := c.Kube.CoreV1().Services(svc.Namespace).Patch(ctx, svc.Name, types.MergePatchType, b, metav1.PatchOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}

func nilIfEmpty(s string) any {
	if s == "" {
		return nil
	}
	return s
}
