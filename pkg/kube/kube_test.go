package kube_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/cni-genie/cni-genie/pkg/kube"
	"github.com/cni-genie/cni-genie/pkg/testutil/kubeapi"
)

func TestMain(m *testing.M) { kubeapi.Main(m) }

type env struct {
	srv   *kubeapi.Server
	admin *kubernetes.Clientset
	dyn   *dynamic.DynamicClient
	ns    string // namespace of the pods and the genie service account
	other string // a second namespace genie may read NADs in
	deny  string // a namespace genie has no rights in
	role  string // ClusterRole holding kube.PolicyRules
}

func setup(t testing.TB) *env {
	t.Helper()
	s := kubeapi.Shared(t)
	if err := s.InstallProjectCRDs(t.Context(), kubeapi.NADCRDFile); err != nil {
		t.Fatal(err)
	}
	admin, err := s.Clientset()
	if err != nil {
		t.Fatal(err)
	}
	dyn, err := dynamic.NewForConfig(s.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	e := &env{srv: s, admin: admin, dyn: dyn,
		ns: s.CreateNamespace(t, "kube"), other: s.CreateNamespace(t, "kube-other"), deny: s.CreateNamespace(t, "kube-deny")}
	e.role = kubeapi.UniqueName("genie-cni")
	cr := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: e.role}, Rules: kube.PolicyRules()}
	if _, err := admin.RbacV1().ClusterRoles().Create(t.Context(), cr, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { admin.RbacV1().ClusterRoles().Delete(context.Background(), e.role, metav1.DeleteOptions{}) })
	for _, ns := range []string{e.ns, e.other} {
		rb := &rbacv1.RoleBinding{
			ObjectMeta: metav1.ObjectMeta{Name: "genie", Namespace: ns},
			RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: e.role},
			Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: "genie", Namespace: e.ns}},
		}
		if _, err := admin.RbacV1().RoleBindings(ns).Create(t.Context(), rb, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	return e
}

// kubeconfig writes a kubeconfig with a fresh token of the genie service
// account and returns its path and the token's revoke function.
func (e *env) kubeconfig(t testing.TB, path string) func(context.Context) error {
	t.Helper()
	tok, revoke, err := e.srv.ServiceAccountToken(t.Context(), e.ns, "genie")
	if err != nil {
		t.Fatal(err)
	}
	if err := e.srv.WriteKubeconfig(path, tok); err != nil {
		t.Fatal(err)
	}
	return revoke
}

func (e *env) client(t testing.TB) *kube.Client {
	t.Helper()
	path := filepath.Join(t.TempDir(), "kubeconfig")
	e.kubeconfig(t, path)
	c, err := kube.NewFromKubeconfig(path)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func (e *env) createPod(t testing.TB, ns, name string, ann map[string]string) *corev1.Pod {
	t.Helper()
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Annotations: ann, Labels: map[string]string{"app": "x"}},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "example.invalid/none"}}},
	}
	pod, err := e.admin.CoreV1().Pods(ns).Create(t.Context(), pod, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create pod %s/%s: %v", ns, name, err)
	}
	return pod
}

var nadGVR = schema.GroupVersionResource{Group: "k8s.cni.cncf.io", Version: "v1", Resource: "network-attachment-definitions"}

func (e *env) createNAD(t testing.TB, ns, name, config string) {
	t.Helper()
	obj := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "k8s.cni.cncf.io/v1",
		"kind":       "NetworkAttachmentDefinition",
		"metadata":   map[string]any{"name": name, "namespace": ns},
		"spec":       map[string]any{"config": config},
	}}
	if _, err := e.dyn.Resource(nadGVR).Namespace(ns).Create(t.Context(), obj, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create nad %s/%s: %v", ns, name, err)
	}
}

func TestGetPod(t *testing.T) {
	e := setup(t)
	want := e.createPod(t, e.ns, "web", map[string]string{kube.NetworksAnnotation: "net1,other/net2@eth9"})
	c := e.client(t)

	got, err := c.GetPod(t.Context(), e.ns, "web")
	if err != nil {
		t.Fatalf("GetPod: %v", err)
	}
	if got.UID != want.UID || got.Annotations[kube.NetworksAnnotation] != "net1,other/net2@eth9" {
		t.Errorf("GetPod = uid %s annotations %v, want uid %s and the networks annotation", got.UID, got.Annotations, want.UID)
	}

	_, err = c.GetPod(t.Context(), e.ns, "absent")
	if !kube.IsNotFound(err) {
		t.Fatalf("GetPod of a missing pod: err = %v, want IsNotFound", err)
	}
	if !strings.Contains(err.Error(), e.ns+"/absent") {
		t.Errorf("error does not name the pod: %v", err)
	}
}

func TestGetNAD(t *testing.T) {
	e := setup(t)
	// The same name in two namespaces: the namespace picks the object.
	e.createNAD(t, e.ns, "net1", `{"cniVersion":"1.0.0","name":"local","type":"bridge"}`)
	e.createNAD(t, e.other, "net1", `{"cniVersion":"1.0.0","name":"remote","type":"macvlan"}`)
	e.createNAD(t, e.deny, "net1", `{"cniVersion":"1.0.0","name":"secret","type":"ptp"}`)
	c := e.client(t)

	for ns, wantType := range map[string]string{e.ns: "bridge", e.other: "macvlan"} {
		nad, err := c.GetNAD(t.Context(), ns, "net1")
		if err != nil {
			t.Fatalf("GetNAD %s/net1: %v", ns, err)
		}
		var conf struct{ Type string }
		if err := json.Unmarshal([]byte(nad.Spec.Config), &conf); err != nil {
			t.Fatalf("nad %s/net1 config: %v", ns, err)
		}
		if nad.Namespace != ns || nad.Name != "net1" || conf.Type != wantType {
			t.Errorf("GetNAD %s/net1 = %s/%s type %q, want type %q", ns, nad.Namespace, nad.Name, conf.Type, wantType)
		}
	}

	_, err := c.GetNAD(t.Context(), e.ns, "absent")
	if !kube.IsNotFound(err) || !strings.Contains(err.Error(), "network-attachment-definition "+e.ns+"/absent") {
		t.Errorf("GetNAD of a missing nad: err = %v, want IsNotFound naming it", err)
	}
	_, err = c.GetNAD(t.Context(), e.deny, "net1")
	if err == nil || kube.IsNotFound(err) || !strings.Contains(err.Error(), "RBAC") {
		t.Errorf("GetNAD without permission: err = %v, want a forbidden error pointing at RBAC", err)
	}
}

func TestSetNetworkStatus(t *testing.T) {
	e := setup(t)
	e.createPod(t, e.ns, "web", map[string]string{"keep": "me", kube.NetworksAnnotation: "net1"})
	c := e.client(t)

	st := []nadv1.NetworkStatus{
		{Name: "genie-default", Interface: "eth0", IPs: []string{"10.1.0.5", "fd00::5"}, Mac: "0a:58:0a:01:00:05",
			Mtu: 1450, Default: true, Gateway: []string{"10.1.0.1"},
			DNS: nadv1.DNS{Nameservers: []string{"10.0.0.10"}, Search: []string{"svc.cluster.local"}}},
		{Name: e.ns + "/net1", Interface: "net1", IPs: []string{"192.168.7.2"}, Mac: "02:00:00:00:07:02",
			DeviceInfo: &nadv1.DeviceInfo{Type: nadv1.DeviceInfoTypePCI, Version: nadv1.DeviceInfoVersion, Pci: &nadv1.PciDevice{PciAddress: "0000:00:1f.2"}}},
	}
	if err := c.SetNetworkStatus(t.Context(), e.ns, "web", st); err != nil {
		t.Fatalf("SetNetworkStatus: %v", err)
	}
	pod, err := e.admin.CoreV1().Pods(e.ns).Get(t.Context(), "web", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var got []nadv1.NetworkStatus
	if err := json.Unmarshal([]byte(pod.Annotations[kube.NetworkStatusAnnotation]), &got); err != nil {
		t.Fatalf("network-status annotation %q is not valid JSON: %v", pod.Annotations[kube.NetworkStatusAnnotation], err)
	}
	if !reflect.DeepEqual(got, st) {
		t.Errorf("network-status read back\n got %+v\nwant %+v", got, st)
	}
	if pod.Annotations["keep"] != "me" || pod.Annotations[kube.NetworksAnnotation] != "net1" || pod.Labels["app"] != "x" {
		t.Errorf("other metadata changed: annotations %v labels %v", pod.Annotations, pod.Labels)
	}

	// A second write replaces the first (ADD retried by the runtime).
	if err := c.SetNetworkStatus(t.Context(), e.ns, "web", st[:1]); err != nil {
		t.Fatal(err)
	}
	pod, _ = e.admin.CoreV1().Pods(e.ns).Get(t.Context(), "web", metav1.GetOptions{})
	got = nil
	if err := json.Unmarshal([]byte(pod.Annotations[kube.NetworkStatusAnnotation]), &got); err != nil || !reflect.DeepEqual(got, st[:1]) {
		t.Errorf("after rewrite: %v %+v, want %+v", err, got, st[:1])
	}
}

func TestSetNetworkStatusPodGone(t *testing.T) {
	e := setup(t)
	c := e.client(t)
	st := []nadv1.NetworkStatus{{Name: "n", Interface: "eth0", Default: true}}

	err := c.SetNetworkStatus(t.Context(), e.ns, "never-existed", st)
	if !kube.IsNotFound(err) {
		t.Fatalf("SetNetworkStatus on a missing pod: err = %v, want IsNotFound", err)
	}

	// The pod is deleted and re-created under the same name (a StatefulSet):
	// the old sandbox's status must not land on the new pod.
	old := e.createPod(t, e.ns, "db-0", nil)
	if err := c.SetNetworkStatusForUID(t.Context(), e.ns, "db-0", old.UID, st); err != nil {
		t.Fatalf("SetNetworkStatusForUID with the right uid: %v", err)
	}
	if err := e.admin.CoreV1().Pods(e.ns).Delete(t.Context(), "db-0", metav1.DeleteOptions{GracePeriodSeconds: new(int64)}); err != nil {
		t.Fatal(err)
	}
	fresh := e.createPod(t, e.ns, "db-0", nil)
	err = c.SetNetworkStatusForUID(t.Context(), e.ns, "db-0", old.UID, st)
	if !kube.IsNotFound(err) {
		t.Fatalf("SetNetworkStatusForUID on a re-created pod: err = %v, want IsNotFound", err)
	}
	t.Logf("re-created pod: %v", err)
	pod, _ := e.admin.CoreV1().Pods(e.ns).Get(t.Context(), "db-0", metav1.GetOptions{})
	if pod.UID != fresh.UID || pod.Annotations[kube.NetworkStatusAnnotation] != "" {
		t.Errorf("re-created pod got the old status: uid %s annotations %v", pod.UID, pod.Annotations)
	}
}

func TestKubeconfigTokenRotation(t *testing.T) {
	t.Parallel() // waits out the API server's 10s token cache
	e := setup(t)
	e.createPod(t, e.ns, "web", nil)
	dir := t.TempDir()
	path := filepath.Join(dir, "kubeconfig")
	oldPath := filepath.Join(dir, "kubeconfig.old")

	revokeOld := e.kubeconfig(t, path)
	before, err := kube.NewFromKubeconfig(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := before.GetPod(t.Context(), e.ns, "web"); err != nil {
		t.Fatalf("GetPod with the first token: %v", err)
	}
	data, _ := os.ReadFile(path)
	if err := os.WriteFile(oldPath, data, 0o600); err != nil {
		t.Fatal(err)
	}

	// Rotate: the agent writes a new token into the same file, then the old
	// one is revoked.
	e.kubeconfig(t, path)
	if err := revokeOld(t.Context()); err != nil {
		t.Fatal(err)
	}

	after, err := kube.NewFromKubeconfig(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := after.GetPod(t.Context(), e.ns, "web"); err != nil {
		t.Fatalf("GetPod after rotation through the rewritten kubeconfig: %v", err)
	}

	// The old token stops working once the API server's token cache expires.
	stale, err := kube.NewFromKubeconfig(oldPath)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err = stale.GetPod(t.Context(), e.ns, "web")
		if kube.IsUnauthorized(err) || time.Now().After(deadline) {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	if !kube.IsUnauthorized(err) {
		t.Fatalf("GetPod with the revoked token: err = %v, want 401", err)
	}
	for _, want := range []string{oldPath, "rejected", "token expired, revoked or unknown", "pod " + e.ns + "/web"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("401 error %q does not mention %q", err, want)
		}
	}
	// A client built before the rotation holds the revoked token: this is
	// why genie builds a client per invocation.
	if _, err := before.GetPod(t.Context(), e.ns, "web"); !kube.IsUnauthorized(err) {
		t.Errorf("client built before rotation: err = %v, want 401", err)
	}
	if _, err := after.GetPod(t.Context(), e.ns, "web"); err != nil {
		t.Errorf("new token after revocation of the old one: %v", err)
	}
}

// TestKubeconfigTokenFileRotation: the kubeconfig names a token file (a
// projected service-account token); rotation rewrites only that file.
func TestKubeconfigTokenFileRotation(t *testing.T) {
	t.Parallel() // waits out the API server's 10s token cache
	e := setup(t)
	e.createPod(t, e.ns, "web", nil)
	dir := t.TempDir()
	path, tokenFile := filepath.Join(dir, "kubeconfig"), filepath.Join(dir, "token")
	if err := kubeapi.WriteKubeconfigTokenFile(path, e.srv.URL, e.srv.CAData, tokenFile); err != nil {
		t.Fatal(err)
	}
	writeToken := func() (string, func(context.Context) error) {
		tok, revoke, err := e.srv.ServiceAccountToken(t.Context(), e.ns, "genie")
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(tokenFile+".tmp", []byte(tok), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tokenFile+".tmp", tokenFile); err != nil {
			t.Fatal(err)
		}
		return tok, revoke
	}
	oldTok, revokeOld := writeToken()
	c, err := kube.NewFromKubeconfig(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.GetPod(t.Context(), e.ns, "web"); err != nil {
		t.Fatalf("GetPod with the first token file: %v", err)
	}
	writeToken()
	if err := revokeOld(t.Context()); err != nil {
		t.Fatal(err)
	}
	stale, err := kube.NewFromConfig(e.srv.RESTConfigForToken(oldTok))
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := stale.GetPod(t.Context(), e.ns, "web")
		if kube.IsUnauthorized(err) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("revoked token still accepted: %v", err)
		}
		time.Sleep(250 * time.Millisecond)
	}
	c, err = kube.NewFromKubeconfig(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.GetPod(t.Context(), e.ns, "web"); err != nil {
		t.Fatalf("GetPod after the token file was rotated: %v", err)
	}
}

func TestUnreachableAPIServer(t *testing.T) {
	// A closed loopback port: connection refused, not a hang.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := kubeapi.WriteKubeconfig(path, "https://"+addr, nil, "any"); err != nil {
		t.Fatal(err)
	}
	c, err := kube.NewFromKubeconfig(path)
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.GetPod(t.Context(), "ns", "p")
	if !kube.IsUnavailable(err) || kube.IsNotFound(err) {
		t.Errorf("GetPod against a closed port: err = %v, want IsUnavailable", err)
	}
	t.Logf("closed port: %v", err)
	err = c.SetNetworkStatus(t.Context(), "ns", "p", nil)
	if !kube.IsUnavailable(err) {
		t.Errorf("SetNetworkStatus against a closed port: err = %v, want IsUnavailable", err)
	}

	// A context deadline shorter than DefaultTimeout is honoured.
	ctx, cancel := context.WithTimeout(t.Context(), time.Nanosecond)
	defer cancel()
	<-ctx.Done()
	if _, err := c.GetNAD(ctx, "ns", "n"); !kube.IsUnavailable(err) {
		t.Errorf("GetNAD with an expired context: err = %v, want IsUnavailable", err)
	}
}

// TestSilentAPIServer: a server that accepts connections and never answers
// (a wedged apiserver or a half-dead load balancer) must not hang a CNI
// invocation. Without a caller deadline the call ends after DefaultTimeout.
func TestSilentAPIServer(t *testing.T) {
	t.Parallel() // waits DefaultTimeout
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c) // held open, never read
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	})
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := kubeapi.WriteKubeconfig(path, "https://"+l.Addr().String(), nil, "any"); err != nil {
		t.Fatal(err)
	}
	c, err := kube.NewFromKubeconfig(path)
	if err != nil {
		t.Fatal(err)
	}
	// The caller's shorter deadline wins.
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	if _, err := c.GetPod(ctx, "ns", "p"); !kube.IsUnavailable(err) {
		t.Errorf("GetPod with a 200ms deadline against a silent server: err = %v, want IsUnavailable", err)
	}
	// No caller deadline: DefaultTimeout ends it (the test binary's own
	// timeout would catch a hang).
	if _, err := c.GetNAD(context.Background(), "ns", "n"); !kube.IsUnavailable(err) {
		t.Errorf("GetNAD without a deadline against a silent server: err = %v, want IsUnavailable", err)
	}
}

// TestUntrustedServerCertificate: a kubeconfig with the wrong CA is a
// configuration error, reported as such and not as an outage.
func TestUntrustedServerCertificate(t *testing.T) {
	s := kubeapi.Shared(t)
	// A CA that did not sign the server's certificate.
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "other-ca"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	otherCA := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := kubeapi.WriteKubeconfig(path, s.URL, otherCA, s.AdminToken); err != nil {
		t.Fatal(err)
	}
	c, err := kube.NewFromKubeconfig(path)
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.GetPod(t.Context(), "default", "p")
	if err == nil || kube.IsUnavailable(err) || !strings.Contains(err.Error(), "certificate-authority") {
		t.Errorf("GetPod with the wrong CA: err = %v, want a certificate error pointing at certificate-authority", err)
	}
}

func TestNewFromKubeconfigErrors(t *testing.T) {
	if _, err := kube.NewFromKubeconfig(""); err == nil {
		t.Error("empty path accepted")
	}
	missing := filepath.Join(t.TempDir(), "nope")
	if _, err := kube.NewFromKubeconfig(missing); err == nil || !strings.Contains(err.Error(), missing) {
		t.Errorf("missing kubeconfig: err = %v, want one naming %s", err, missing)
	}
	garbage := filepath.Join(t.TempDir(), "garbage")
	os.WriteFile(garbage, []byte("{not yaml"), 0o600)
	if _, err := kube.NewFromKubeconfig(garbage); err == nil || !strings.Contains(err.Error(), garbage) {
		t.Errorf("garbage kubeconfig: err = %v, want one naming %s", err, garbage)
	}
}
