package kubenode

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/cni-genie/cni-genie/pkg/image"
	"github.com/cni-genie/cni-genie/pkg/testutil/testenv"
)

// EnvRequire, when "1", turns missing binaries into failures (CI).
const EnvRequire = "GENIE_REQUIRE_KUBE"

// New starts a node for one test and stops it in t.Cleanup. It skips under
// -short, when not root, or when binaries are missing (fails then if
// GENIE_REQUIRE_KUBE=1). BinDir defaults to testenv.BinDir.
func New(t testing.TB, opts Options) *Node {
	t.Helper()
	Require(t)
	if opts.BinDir == "" {
		opts.BinDir = testenv.BinDir(t)
	}
	if opts.Logf == nil {
		opts.Logf = t.Logf
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	n, err := Start(ctx, opts)
	if n != nil {
		t.Cleanup(n.Stop)
	}
	if err != nil {
		if errors.Is(err, ErrBinariesMissing) && os.Getenv(EnvRequire) != "1" {
			t.Skipf("needs a real node: %v (set %s=1 to make this a failure)", err, EnvRequire)
		}
		t.Fatalf("kubenode: %v", err)
	}
	return n
}

// Require skips the test under -short or when not root.
func Require(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("short mode: needs a real kubelet and containerd")
	}
	testenv.RequireRoot(t, "runs kubelet, containerd and runc in private namespaces")
}

// TestImages writes the pause and busybox images (image.PauseRef,
// image.BusyboxRef) into a tarball in dir; busybox comes from the bin dir.
func TestImages(t testing.TB, binDir, dir string) string {
	t.Helper()
	bb := filepath.Join(binDir, "busybox")
	if _, err := os.Stat(bb); err != nil {
		if os.Getenv(EnvRequire) == "1" {
			t.Fatalf("needs %s (run hack/build-test-bins.sh)", bb)
		}
		t.Skipf("needs %s (run hack/build-test-bins.sh)", bb)
	}
	root := testenv.ModuleRoot(t)
	pause := filepath.Join(dir, "pause")
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", pause, "./hack/images/pause")
	cmd.Dir, cmd.Env = root, append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build pause: %v\n%s", err, out)
	}
	out := filepath.Join(dir, "test-images.tar")
	if _, err := image.WriteTarball(out, image.Pause(image.PauseRef, pause), image.Busybox(image.BusyboxRef, bb)); err != nil {
		t.Fatal(err)
	}
	return out
}

// BusyboxPod is a pod running sleep in the busybox image, with the given
// annotations, pinned to node (no scheduler needed) unless node is empty.
func BusyboxPod(namespace, name, node string, annotations map[string]string) *corev1.Pod {
	grace := int64(1)
	f := false
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace, Annotations: annotations},
		Spec: corev1.PodSpec{
			NodeName:                      node,
			AutomountServiceAccountToken:  &f,
			TerminationGracePeriodSeconds: &grace,
			Containers: []corev1.Container{{Name: "c", Image: image.BusyboxRef, ImagePullPolicy: corev1.PullNever,
				Command: []string{"/bin/sleep", "3600"}}},
		},
	}
}

// WaitRunning waits until the pod is Running and returns it.
func WaitRunning(ctx context.Context, cs kubernetes.Interface, namespace, name string, timeout time.Duration) (*corev1.Pod, error) {
	deadline := time.Now().Add(timeout)
	var last *corev1.Pod
	for time.Now().Before(deadline) {
		p, err := cs.CoreV1().Pods(namespace).Get(ctx, name, metav1.GetOptions{})
		if err == nil {
			last = p
			if p.Status.Phase == corev1.PodRunning {
				return p, nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return nil, fmt.Errorf("pod %s/%s not Running after %v: %s", namespace, name, timeout, podSummary(ctx, cs, last))
}

// podSummary describes why a pod is not running (status and events).
func podSummary(ctx context.Context, cs kubernetes.Interface, p *corev1.Pod) string {
	if p == nil {
		return "never seen"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "phase %s", p.Status.Phase)
	for _, c := range p.Status.ContainerStatuses {
		if c.State.Waiting != nil {
			fmt.Fprintf(&b, "; %s waiting: %s %s", c.Name, c.State.Waiting.Reason, c.State.Waiting.Message)
		}
	}
	evs, err := cs.CoreV1().Events(p.Namespace).List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=" + p.Name})
	if err == nil {
		for _, e := range evs.Items {
			fmt.Fprintf(&b, "\n  event %s: %s", e.Reason, e.Message)
		}
	}
	return b.String()
}

// WaitGone waits until the pod no longer exists.
func WaitGone(ctx context.Context, cs kubernetes.Interface, namespace, name string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if _, err := cs.CoreV1().Pods(namespace).Get(ctx, name, metav1.GetOptions{}); err != nil {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("pod %s/%s still exists after %v", namespace, name, timeout)
}

// NewWorker starts a worker node joined to n (AddNode) for one test; n's
// Stop (in its own t.Cleanup) stops it too. It fails the test if the
// worker does not come up.
func NewWorker(t testing.TB, n *Node, opts Options) *Node {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	w, err := n.AddNode(ctx, opts)
	if err != nil {
		t.Fatalf("kubenode: %v", err)
	}
	return w
}
