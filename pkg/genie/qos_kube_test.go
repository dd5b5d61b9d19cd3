package genie

import (
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cni-genie/cni-genie/pkg/qos"
	"github.com/cni-genie/cni-genie/pkg/selection"
	"github.com/cni-genie/cni-genie/pkg/testutil/kubeapi"
	"github.com/containernetworking/cni/pkg/types"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"
)

// TestKubernetesQoSAnnotations: on a real API server, the pod's QoS
// annotations (class, egress and ingress bandwidth) and an NPWG element's
// cni-args and bandwidth reach the agent's attach requests of VPC
// attachments, with the element's own value first; a bad
// annotation fails the ADD with code 7 naming the key, before any attach.
func TestKubernetesQoSAnnotations(t *testing.T) {
	srv := kubeapi.Shared(t)
	crds, err := kubeapi.CRDDir()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kubeapi.InstallCRDs(t.Context(), srv.RESTConfig(), filepath.Join(crds, "network-attachment-definition.yaml")); err != nil {
		t.Fatalf("installing the NAD CRD: %v", err)
	}
	cs, err := srv.Clientset()
	if err != nil {
		t.Fatal(err)
	}
	ns := srv.CreateNamespace(t, "genie-qos")
	dyn, err := dynamic.NewForConfig(srv.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	nad := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
		"metadata": map[string]any{"name": "red-db", "namespace": ns},
		"spec":     map[string]any{"config": `{"cniVersion":"1.1.0","type":"genie-vpc","vpc":"red","subnet":"db"}`},
	}}
	if _, err := dyn.Resource(nadGVR).Namespace(ns).Create(t.Context(), nad, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	e := newUnprivEnv(t)
	e.write(t, "10-blue-web.conf", `{"cniVersion":"1.1.0","name":"blue-web","type":"genie-vpc","vpc":"blue","subnet":"web"}`)
	agent := startAgent(t, e.socket)
	kc := filepath.Join(t.TempDir(), "genie.kubeconfig")
	if err := srv.WriteKubeconfig(kc, ""); err != nil {
		t.Fatal(err)
	}
	add := func(name string, ann map[string]string) error {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Annotations: ann},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "example.invalid/none"}}}}
		p, err := cs.CoreV1().Pods(ns).Create(t.Context(), p, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		a := e.args("kq-"+name, "IgnoreUnknown=1;K8S_POD_NAMESPACE="+ns+";K8S_POD_NAME="+name+";K8S_POD_UID="+string(p.UID), t.TempDir())
		conf := map[string]any{}
		_ = json.Unmarshal(a.StdinData, &conf)
		conf["kubeconfig"] = kc
		a.StdinData, _ = json.Marshal(conf)
		_, err = Add(a)
		return err
	}

	if err := add("web", map[string]string{
		qos.AnnotationClass:          "high",
		qos.AnnotationEgress:         "10M",
		qos.AnnotationIngress:        "20M",
		selection.NetworksAnnotation: `[{"name":"red-db","interface":"db0","cni-args":{"qos":"low"},"bandwidth":{"ingressRate":5000000,"ingressBurst":1000000}}]`,
	}); err != nil {
		t.Fatalf("add: %v", err)
	}
	if len(agent.attachRq) != 2 {
		t.Fatalf("%d attach requests, want 2", len(agent.attachRq))
	}
	if q := agent.attachRq[0].QoS; q == nil || *q != (qos.Spec{Class: qos.High, EgressRate: 10_000_000, IngressRate: 20_000_000}) {
		t.Errorf("default network qos %+v, want the pod's annotations", q)
	}
	if q := agent.attachRq[1].QoS; q == nil ||
		*q != (qos.Spec{Class: qos.Low, EgressRate: 10_000_000, IngressRate: 5_000_000, IngressBurst: 1_000_000}) {
		t.Errorf("red-db qos %+v, want cni-args low and the element's bandwidth over the annotations", q)
	}

	n := len(agent.attachRq)
	err = add("bad", map[string]string{qos.AnnotationIngress: "lots"})
	var te *types.Error
	if !errors.As(err, &te) || te.Code != types.ErrInvalidNetworkConfig || !strings.Contains(te.Msg, "blue-web") ||
		!strings.Contains(te.Msg, qos.AnnotationIngress) {
		t.Errorf("bad annotation: %v, want code 7 naming the network and %s", err, qos.AnnotationIngress)
	}
	if len(agent.attachRq) != n {
		t.Error("the agent was asked to attach despite the bad annotation")
	}
}
