package agent_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/cni-genie/cni-genie/pkg/store/kubestore"
	"github.com/cni-genie/cni-genie/pkg/testutil/kubeapi"
	"github.com/cni-genie/cni-genie/pkg/vpc"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/plugins/pkg/ns"
)

// startKubeAgent (re)starts n's genied on the kubernetes datastore with
// the kubeconfig at kubeconfig.
func (n *node) startKubeAgent(t *testing.T, kubeconfig string) {
	t.Helper()
	n.logPath = filepath.Join(n.dir, fmt.Sprintf("genied-kube-%d.log", time.Now().UnixNano()))
	logf, err := os.Create(n.logPath)
	if err != nil {
		t.Fatal(err)
	}
	n.agent = exec.Command("nsenter", "--net="+n.ns.Path(), "--",
		n.c.bin, "--node-name", n.name, "--uplink", "eth0", "--pin-dir", n.pinDir,
		"--socket", n.socket, "--state-dir", filepath.Join(n.dir, "state"),
		"--datastore", "kubernetes", "--kubeconfig", kubeconfig, "--metrics-addr", "127.0.0.1:9465")
	n.agent.Stdout, n.agent.Stderr = logf, logf
	if err := n.agent.Start(); err != nil {
		t.Fatalf("starting genied: %v", err)
	}
	n.agentErr = make(chan error, 1)
	go func() { n.agentErr <- n.agent.Wait(); logf.Close() }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		st, err := n.client.Status(context.Background())
		if err == nil && st.Ready {
			return
		}
		select {
		case err := <-n.agentErr:
			n.agent = nil
			t.Fatalf("genied on %s (kubernetes datastore) exited during start-up: %v\n%s", n.name, err, n.logs())
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("genied on %s not ready after 30 s: %+v %v\n%s", n.name, st, err, n.logs())
		}
	}
}

// The node agent on the Kubernetes datastore, with exactly the least
// privilege of deploy/policy (ClusterRole genie-agent, a service-account
// token bound to its Node, the node-scope admission policy): it
// registers its node, claims a block and publishes a pod's endpoint.
// Then the API server stops: an ADD through the socket fails within 5 s
// with code 11 naming the API server and the step, and STATUS is not
// ready.
func TestPrivilegedAgentKubernetesLeastPrivilege(t *testing.T) {
	c := newCluster(t, 1)
	n := c.nodes[0]
	srv := kubeapi.New(t, kubeapi.Options{})
	ctx := t.Context()
	if err := srv.InstallProjectCRDs(ctx, kubestore.CRDFiles...); err != nil {
		t.Fatal(err)
	}
	if err := srv.InstallPolicies(ctx); err != nil {
		t.Fatal(err)
	}
	admin, err := kubestore.NewForConfig(ctx, srv.RESTConfig(), kubestore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	if _, err := admin.CreateVPC(ctx, vpc.VPC{Name: "blue", CIDR: netip.MustParsePrefix("10.1.0.0/16")}); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.CreateSubnet(ctx, vpc.Subnet{VPC: "blue", Name: "web", CIDR: netip.MustParsePrefix("10.1.0.0/24")}); err != nil {
		t.Fatal(err)
	}
	cs, err := srv.Clientset()
	if err != nil {
		t.Fatal(err)
	}
	ns := srv.CreateNamespace(t, "genie")
	if _, err := cs.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: kubestore.AgentServiceAccount}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	crb := &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "genie-agent"},
		Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Name: kubestore.AgentServiceAccount, Namespace: ns}},
		RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "genie-agent"}}
	if _, err := cs.RbacV1().ClusterRoleBindings().Create(ctx, crb, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	kn, err := cs.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n.name}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	expiry := int64(3600)
	tr, err := cs.CoreV1().ServiceAccounts(ns).CreateToken(ctx, kubestore.AgentServiceAccount, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &expiry,
			BoundObjectRef: &authenticationv1.BoundObjectReference{Kind: "Node", APIVersion: "v1", Name: kn.Name, UID: kn.UID}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	kubeconfig := filepath.Join(n.dir, "agent.kubeconfig")
	// genied lives in the node netns: it reaches the host's loopback API
	// server through a forwarder listening on the node's loopback.
	inNode := forwardIntoNetns(t, n, strings.TrimPrefix(srv.URL, "https://"))
	if err := kubeapi.WriteKubeconfig(kubeconfig, "https://"+inNode, srv.CAData, tr.Status.Token); err != nil {
		t.Fatal(err)
	}

	n.stopAgent()
	n.startKubeAgent(t, kubeconfig)
	p := n.mustAttach(t, "a", "blue", "web")
	if gn, err := admin.GetNode(ctx, n.name); err != nil {
		t.Fatalf("the agent's GenieNode: %v", err)
	} else if e, err := admin.GetEndpoint(ctx, "blue", p.id+"/"+p.ifName); err != nil || e.Node != gn.Name {
		t.Fatalf("the pod's endpoint: %+v, %v", e, err)
	}

	srv.Stop()
	start := time.Now()
	_, err = n.attach("b", "blue", "web")
	took := time.Since(start)
	var te *types.Error
	if !errors.As(err, &te) || te.Code != types.ErrTryAgainLater || !strings.Contains(te.Msg, "kubernetes API server https://"+inNode) {
		t.Fatalf("attach with the API server down: %v (after %v), want code 11 naming the API server\n%s", err, took, n.logs())
	}
	t.Logf("attach with the API server down: %s after %v", te.Msg, took)
	if took > 5*time.Second {
		t.Errorf("attach took %v with the API server down, want under 5 s", took)
	}
	if st, err := n.client.Status(context.Background()); err != nil || st.Ready || !strings.Contains(st.Message, "kubernetes API server") {
		t.Errorf("status with the API server down: %+v, %v", st, err)
	}
	n.killAgent() // its store is gone for good
}

// forwardIntoNetns listens on 127.0.0.1 inside n's netns and forwards each
// connection to hostAddr on the host's loopback; it returns the address
// inside the netns.
func forwardIntoNetns(t *testing.T, n *node, hostAddr string) string {
	t.Helper()
	var l net.Listener
	err := n.ns.Do(func(ns.NetNS) error {
		var err error
		l, err = net.Listen("tcp4", "127.0.0.1:0")
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				b, err := net.Dial("tcp4", hostAddr)
				if err != nil {
					return
				}
				defer b.Close()
				go func() { io.Copy(b, c); b.Close() }()
				io.Copy(c, b)
			}()
		}
	}()
	return l.Addr().String()
}
