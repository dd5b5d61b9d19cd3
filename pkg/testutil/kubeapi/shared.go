package kubeapi

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

var shared struct {
	mu     sync.Mutex
	inMain bool
	tried  bool
	srv    *Server
	err    error
}

// Main runs the package's tests and stops the shared Server (if a test
// started one) before exiting. Call it from TestMain:
//
//	func TestMain(m *testing.M) { kubeapi.Main(m) }
func Main(m *testing.M) {
	shared.mu.Lock()
	shared.inMain = true
	shared.mu.Unlock()
	code := m.Run()
	shared.mu.Lock()
	if shared.srv != nil {
		shared.srv.Stop()
	}
	shared.mu.Unlock()
	os.Exit(code)
}

// Shared returns the test binary's one Server, starting it on first use. It
// skips the test when the binaries are missing (fails if
// GENIE_REQUIRE_KUBE=1) or under go test -short, and fails it when start-up
// failed. The package's TestMain must call Main, which stops the Server at
// exit.
func Shared(t testing.TB) *Server {
	t.Helper()
	skipShort(t)
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if !shared.inMain {
		t.Fatal("kubeapi.Shared needs func TestMain(m *testing.M) { kubeapi.Main(m) } in this package")
	}
	if !shared.tried {
		shared.tried = true
		shared.srv, shared.err = Start(context.Background(), Options{})
		if shared.err == nil {
			t.Logf("kubeapi: shared server %s ready in %v", shared.srv.URL, shared.srv.StartupTime)
		}
	}
	if shared.err != nil {
		SkipOrFail(t, shared.err)
	}
	return shared.srv
}

// New starts a private Server for one test and stops it in t.Cleanup. Use it
// for tests that restart the API server; others should use Shared.
func New(t testing.TB, opts Options) *Server {
	t.Helper()
	skipShort(t)
	if opts.Logf == nil {
		opts.Logf = t.Logf
	}
	s, err := Start(t.Context(), opts)
	if err != nil {
		SkipOrFail(t, err)
	}
	t.Cleanup(s.Stop)
	return s
}

// skipShort skips in go test -short, which runs only the tests needing no
// test binaries.
func skipShort(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("short mode: needs a real kube-apiserver")
	}
}

// SkipOrFail ends the test for a Start error: a skip when the binaries are
// missing and GENIE_REQUIRE_KUBE is not 1, a failure otherwise.
func SkipOrFail(t testing.TB, err error) {
	t.Helper()
	if errors.Is(err, ErrBinariesMissing) && os.Getenv(EnvRequire) != "1" {
		t.Skipf("needs a real kube-apiserver: %v (set %s=1 to make this a failure)", err, EnvRequire)
	}
	t.Fatalf("kubeapi: %v", err)
}

// UniqueName returns prefix plus a random suffix, a valid DNS label (prefix
// must be one, at most 50 characters). Namespaces never finish deleting on
// this server (no controller-manager), so every test needs fresh names.
func UniqueName(prefix string) string {
	b := make([]byte, 4)
	rand.Read(b)
	return strings.ToLower(prefix) + "-" + hex.EncodeToString(b)
}

// CreateNamespace creates a uniquely named namespace (prefix plus a random
// suffix) and returns its name. It is deleted in t.Cleanup (it then stays
// Terminating, harmlessly).
func (s *Server) CreateNamespace(t testing.TB, prefix string) string {
	t.Helper()
	cs, err := kubernetes.NewForConfig(s.RESTConfig())
	if err != nil {
		t.Fatalf("create namespace: %v", err)
	}
	name := UniqueName(prefix)
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if _, err := cs.CoreV1().Namespaces().Create(t.Context(), ns, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create namespace %s: %v", name, err)
	}
	t.Cleanup(func() {
		s.mu.Lock()
		stopped := s.stopped
		s.mu.Unlock()
		if stopped {
			return
		}
		err := cs.CoreV1().Namespaces().Delete(context.Background(), name, metav1.DeleteOptions{})
		if err != nil {
			t.Logf("delete namespace %s: %v", name, err)
		}
	})
	return name
}

// Clientset returns a typed clientset authenticated as the admin.
func (s *Server) Clientset() (*kubernetes.Clientset, error) {
	cs, err := kubernetes.NewForConfig(s.RESTConfig())
	if err != nil {
		return nil, fmt.Errorf("admin clientset: %w", err)
	}
	return cs, nil
}
