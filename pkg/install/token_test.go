package install

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/cni-genie/cni-genie/pkg/testutil/kubeapi"
)

func TestMain(m *testing.M) { kubeapi.Main(m) }

// TestTokenRequesterRealAPIServer issues the plugin's token for its own
// service account, writes it into the plugin's kubeconfig and checks that
// the API server authenticates it as that account; the token is reused
// until half its life and replaced after.
func TestTokenRequesterRealAPIServer(t *testing.T) {
	srv := kubeapi.Shared(t)
	ns := srv.CreateNamespace(t, "install")
	cs, err := srv.Clientset()
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "genie-cni", Namespace: ns}}
	if _, err := cs.CoreV1().ServiceAccounts(ns).Create(ctx, sa, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	r := &TokenRequester{Client: cs, Namespace: ns, ServiceAccount: "genie-cni", Expiration: 20 * time.Minute, Now: func() time.Time { return now }}
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.crt")
	if err := os.WriteFile(ca, srv.CAData, 0o600); err != nil {
		t.Fatal(err)
	}
	kc := filepath.Join(dir, KubeconfigName)
	src := KubeconfigSource{Server: srv.URL, CAFile: ca, Requester: r}
	if _, err := WriteKubeconfig(ctx, kc, src); err != nil {
		t.Fatal(err)
	}
	whoami := func() (string, string) {
		cfg, err := clientcmd.BuildConfigFromFlags("", kc)
		if err != nil {
			t.Fatal(err)
		}
		pc, err := kubernetes.NewForConfig(cfg)
		if err != nil {
			t.Fatal(err)
		}
		rev, err := pc.AuthenticationV1().SelfSubjectReviews().Create(context.Background(), &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("plugin kubeconfig does not authenticate: %v", err)
		}
		return rev.Status.UserInfo.Username, cfg.BearerToken
	}
	user, tok1 := whoami()
	if want := "system:serviceaccount:" + ns + ":genie-cni"; user != want {
		t.Fatalf("plugin authenticates as %q, want %q", user, want)
	}
	if changed, err := WriteKubeconfig(ctx, kc, src); err != nil || changed {
		t.Fatalf("token re-issued before it was due: changed=%v err=%v", changed, err)
	}
	now = now.Add(11 * time.Minute)
	if changed, err := WriteKubeconfig(ctx, kc, src); err != nil || !changed {
		t.Fatalf("token not renewed after half its life: changed=%v err=%v", changed, err)
	}
	if _, tok2 := whoami(); tok2 == tok1 {
		t.Fatal("renewed kubeconfig carries the old token")
	}
}
