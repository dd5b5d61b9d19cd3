package kubeapi

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

func TestMain(m *testing.M) {
	if os.Getenv("KUBEAPI_ORPHAN_CHILD") == "1" {
		orphanChild()
		return
	}
	Main(m)
}

func whoami(t *testing.T, s *Server, token string) (string, error) {
	t.Helper()
	cs, err := kubernetes.NewForConfig(s.RESTConfigForToken(token))
	if err != nil {
		t.Fatal(err)
	}
	r, err := cs.AuthenticationV1().SelfSubjectReviews().Create(t.Context(), &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
	if err != nil {
		return "", err
	}
	return r.Status.UserInfo.Username, nil
}

func TestSharedServerServesPods(t *testing.T) {
	s := Shared(t)
	cs, err := s.Clientset()
	if err != nil {
		t.Fatal(err)
	}
	v, err := cs.Discovery().ServerVersion()
	if err != nil {
		t.Fatalf("server version: %v", err)
	}
	if v.GitVersion != "v1.37.2" {
		t.Errorf("server version = %q, want v1.37.2 (built by hack/build-test-bins.sh)", v.GitVersion)
	}
	if u, err := whoami(t, s, s.AdminToken); err != nil || u != AdminUser {
		t.Fatalf("admin token authenticates as %q, %v; want %q", u, err, AdminUser)
	}

	ns := s.CreateNamespace(t, "harness")
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: ns, Annotations: map[string]string{"a": "b"}},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "example.invalid/none"}}},
	}
	if _, err := cs.CoreV1().Pods(ns).Create(t.Context(), pod, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create pod: %v", err)
	}
	got, err := cs.CoreV1().Pods(ns).Get(t.Context(), "p", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("get pod: %v", err)
	}
	if got.Annotations["a"] != "b" || got.UID == "" {
		t.Errorf("pod read back = %+v", got.ObjectMeta)
	}

	// A kubeconfig written by the harness is usable by clientcmd.
	kc := filepath.Join(t.TempDir(), "kubeconfig")
	if err := s.WriteKubeconfig(kc, ""); err != nil {
		t.Fatal(err)
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", kc)
	if err != nil {
		t.Fatalf("load written kubeconfig: %v", err)
	}
	cs2, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cs2.CoreV1().Pods(ns).Get(t.Context(), "p", metav1.GetOptions{}); err != nil {
		t.Fatalf("get pod through written kubeconfig: %v", err)
	}
}

func TestInstallProjectCRDs(t *testing.T) {
	s := Shared(t)
	// Twice, as parallel test packages might: the second is an update.
	for range 2 {
		if err := s.InstallProjectCRDs(t.Context(), NADCRDFile); err != nil {
			t.Fatal(err)
		}
	}
	dc, err := dynamic.NewForConfig(s.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	ns := s.CreateNamespace(t, "crd")
	gvr := schema.GroupVersionResource{Group: "k8s.cni.cncf.io", Version: "v1", Resource: "network-attachment-definitions"}
	obj := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "k8s.cni.cncf.io/v1",
		"kind":       "NetworkAttachmentDefinition",
		"metadata":   map[string]any{"name": "net1"},
		"spec":       map[string]any{"config": `{"cniVersion":"1.0.0","type":"bridge"}`},
	}}
	if _, err := dc.Resource(gvr).Namespace(ns).Create(t.Context(), obj, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create nad: %v", err)
	}
	got, err := dc.Resource(gvr).Namespace(ns).Get(t.Context(), "net1", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("get nad: %v", err)
	}
	if cfg, _, _ := unstructured.NestedString(got.Object, "spec", "config"); !strings.Contains(cfg, `"bridge"`) {
		t.Errorf("spec.config read back = %q", cfg)
	}
	// The schema is structural: a non-string config is refused.
	bad := obj.DeepCopy()
	bad.SetName("bad")
	bad.Object["spec"] = map[string]any{"config": 42}
	if _, err := dc.Resource(gvr).Namespace(ns).Create(t.Context(), bad, metav1.CreateOptions{}); !apierrors.IsInvalid(err) {
		t.Errorf("create nad with numeric spec.config: err = %v, want Invalid", err)
	}

	cs, err := s.Clientset()
	if err != nil {
		t.Fatal(err)
	}
	list, err := cs.Discovery().ServerResourcesForGroupVersion("k8s.cni.cncf.io/v1")
	if err != nil {
		t.Fatal(err)
	}
	var found bool
	for _, r := range list.APIResources {
		if r.Name == "network-attachment-definitions" {
			found = true
			if !r.Namespaced || r.Kind != "NetworkAttachmentDefinition" || len(r.ShortNames) != 1 || r.ShortNames[0] != "net-attach-def" {
				t.Errorf("discovery entry = %+v", r)
			}
		}
	}
	if !found {
		t.Error("network-attachment-definitions not in discovery")
	}
}

// TestInstallAllProjectCRDs installs every CRD in deploy/crds: each must be
// accepted (schema, CEL rules) and become Established on a real API server.
func TestInstallAllProjectCRDs(t *testing.T) {
	s := Shared(t)
	dir, err := CRDDir()
	if err != nil {
		t.Fatal(err)
	}
	crds, err := ReadCRDs(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.InstallProjectCRDs(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d CRDs from %s established", len(crds), dir)
}

func TestServiceAccountTokenRevocation(t *testing.T) {
	t.Parallel() // waits out the API server's 10s token cache
	s := Shared(t)
	ns := s.CreateNamespace(t, "satoken")
	tok, revoke, err := s.ServiceAccountToken(t.Context(), ns, "genie")
	if err != nil {
		t.Fatal(err)
	}
	want := "system:serviceaccount:" + ns + ":genie"
	if u, err := whoami(t, s, tok); err != nil || u != want {
		t.Fatalf("service account token authenticates as %q, %v; want %q", u, err, want)
	}
	if err := revoke(t.Context()); err != nil {
		t.Fatal(err)
	}
	waitUnauthorized(t, s, tok)
}

// waitUnauthorized waits until the API server rejects token with 401
// (revocation goes through the API server's informer cache).
func waitUnauthorized(t *testing.T, s *Server, token string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := whoami(t, s, token)
		if apierrors.IsUnauthorized(err) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("revoked token still accepted: err = %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func TestStaticTokensAddRemoveStop(t *testing.T) {
	pre := Token{Token: "pre-provisioned-token", User: "pre-user", Groups: []string{"team-a"}}
	s := New(t, Options{Tokens: []Token{pre}})
	t.Logf("private server start-up: %v", s.StartupTime)
	if u, err := whoami(t, s, pre.Token); err != nil || u != "pre-user" {
		t.Fatalf("pre-provisioned token: user %q, %v", u, err)
	}
	if _, err := whoami(t, s, "not-yet-known"); !apierrors.IsUnauthorized(err) {
		t.Fatalf("unknown token: err = %v, want 401", err)
	}
	cs, _ := s.Clientset()
	ns := s.CreateNamespace(t, "static")

	if err := s.AddToken("not-yet-known", "added-user", "team-b"); err != nil {
		t.Fatal(err)
	}
	t.Logf("kube-apiserver restart: %v", s.StartupTime)
	if u, err := whoami(t, s, "not-yet-known"); err != nil || u != "added-user" {
		t.Fatalf("added token: user %q, %v", u, err)
	}
	// Objects survive the restart (etcd kept).
	if _, err := cs.CoreV1().Namespaces().Get(t.Context(), ns, metav1.GetOptions{}); err != nil {
		t.Fatalf("namespace after restart: %v", err)
	}
	// Authenticated but not authorized: RBAC is on.
	ucs, _ := kubernetes.NewForConfig(s.RESTConfigForToken("not-yet-known"))
	if _, err := ucs.CoreV1().Pods(ns).List(t.Context(), metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("list pods without RBAC: err = %v, want 403", err)
	}

	if err := s.RemoveToken(pre.Token); err != nil {
		t.Fatal(err)
	}
	if _, err := whoami(t, s, pre.Token); !apierrors.IsUnauthorized(err) {
		t.Fatalf("removed token: err = %v, want 401", err)
	}
	if err := s.RemoveToken(s.AdminToken); err == nil {
		t.Error("removing the admin token succeeded")
	}

	pids := []int{s.apiserver.Pid(), s.etcd.Pid()}
	s.Stop()
	s.Stop() // idempotent
	for _, pid := range pids {
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("process %d still exists after Stop (kill 0: %v)", pid, err)
		}
	}
	if _, err := os.Stat(s.Dir); !os.IsNotExist(err) {
		t.Errorf("temp dir %s left after Stop: %v", s.Dir, err)
	}
}

func TestMissingBinaries(t *testing.T) {
	_, err := Start(t.Context(), Options{BinDir: t.TempDir()})
	if !errors.Is(err, ErrBinariesMissing) {
		t.Fatalf("Start with empty bin dir: err = %v, want ErrBinariesMissing", err)
	}
	if !strings.Contains(err.Error(), "hack/build-test-bins.sh") {
		t.Errorf("error does not name the build step: %v", err)
	}
}

// orphanChild starts a server, reports its pids and dir, and dies without
// stopping it, the way a panicking or timed-out test binary would.
func orphanChild() {
	s, err := Start(context.Background(), Options{})
	if err != nil {
		fmt.Println("error", err)
		os.Exit(3)
	}
	fmt.Println("pids", s.apiserver.Pid(), s.etcd.Pid(), s.Dir)
	os.Exit(2)
}

func TestNoOrphansWhenTestBinaryDies(t *testing.T) {
	if _, err := DefaultBinDir(); err != nil {
		t.Fatal(err)
	}
	Shared(t) // skips the same way when the binaries are missing
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "KUBEAPI_ORPHAN_CHILD=1")
	out, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var line string
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "pids ") || strings.HasPrefix(sc.Text(), "error ") {
			line = sc.Text()
		}
	}
	cmd.Wait()
	f := strings.Fields(line)
	if len(f) != 4 || f[0] != "pids" {
		t.Fatalf("child output: %q", line)
	}
	t.Cleanup(func() { os.RemoveAll(f[3]) })
	for _, s := range f[1:3] {
		pid, _ := strconv.Atoi(s)
		deadline := time.Now().Add(20 * time.Second)
		for {
			err := syscall.Kill(pid, 0)
			if errors.Is(err, syscall.ESRCH) {
				break
			}
			if time.Now().After(deadline) {
				syscall.Kill(pid, syscall.SIGKILL)
				t.Fatalf("process %d outlived the test binary that started it", pid)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
}
