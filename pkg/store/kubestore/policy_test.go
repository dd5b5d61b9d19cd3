package kubestore_test

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"

	"github.com/cni-genie/cni-genie/pkg/kube"
	"github.com/cni-genie/cni-genie/pkg/service"
	"github.com/cni-genie/cni-genie/pkg/store/kubestore"
	"github.com/cni-genie/cni-genie/pkg/testutil/kubeapi"
	"github.com/cni-genie/cni-genie/pkg/vpc"
)

// installPolicies installs deploy/policy and waits until the admission
// policies refuse what they must (they take effect a moment after they
// are created).
func installPolicies(srv *kubeapi.Server) error {
	ctx := context.Background()
	if err := srv.InstallPolicies(ctx); err != nil {
		return err
	}
	d, err := dynamic.NewForConfig(srv.RESTConfig())
	if err != nil {
		return err
	}
	probe := raw("VPCEndpoint", "policy-probe.10-9-9-9", "policy-probe", map[string]any{
		"vpc": "probe", "subnet": "s", "id": "probe/eth0", "ip": "10.9.9.9", "node": "n"})
	// An agent of node "probe" (impersonated, in system:masters so that
	// RBAC lets the request reach admission) writing another node.
	acfg := srv.RESTConfig()
	acfg.Impersonate = rest.ImpersonationConfig{UserName: kubestore.AgentUserPrefix + "probe", Groups: []string{"system:masters"}}
	ad, err := dynamic.NewForConfig(acfg)
	if err != nil {
		return err
	}
	nodeProbe := raw("GenieNode", "policy-probe.other", "policy-probe", map[string]any{"name": "other", "underlayIP": "192.0.2.1"})
	deadline := time.Now().Add(time.Minute)
	objects, nodes := false, false
	for {
		if !objects {
			_, err = d.Resource(gvr("vpcendpoints")).Create(ctx, probe, metav1.CreateOptions{})
			objects = err != nil && strings.Contains(err.Error(), "genie-object-consistency")
			if err == nil {
				_ = d.Resource(gvr("vpcendpoints")).Delete(ctx, probe.GetName(), metav1.DeleteOptions{})
			}
		}
		if !nodes {
			_, err = ad.Resource(gvr("genienodes")).Create(ctx, nodeProbe, metav1.CreateOptions{})
			nodes = err != nil && strings.Contains(err.Error(), "genie-agent-node-scope")
			if err == nil {
				_ = d.Resource(gvr("genienodes")).Delete(ctx, nodeProbe.GetName(), metav1.DeleteOptions{})
			}
		}
		if objects && nodes {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("admission policies not in effect after a minute (last: %v)", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// The roles of deploy/policy/rbac.yaml are exactly the Go rules the
// tests run with.
func TestRBACManifestMatchesGo(t *testing.T) {
	dir, err := kubeapi.PolicyDir()
	if err != nil {
		t.Fatal(err)
	}
	objs, err := kubeapi.ReadObjects(filepath.Join(dir, "rbac.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]rbacv1.PolicyRule{"genie-agent": kubestore.AgentPolicyRules(), "genie-admin": kubestore.PolicyRules(),
		"genie-cni": kube.PolicyRules(), "genie-service-controller": kubestore.ServiceControllerPolicyRules()}
	seen := 0
	for _, o := range objs {
		cr, ok := o.(*rbacv1.ClusterRole)
		if !ok {
			t.Fatalf("rbac.yaml holds a %T", o)
		}
		if !reflect.DeepEqual(cr.Rules, want[cr.Name]) {
			t.Errorf("ClusterRole %s in rbac.yaml:\n%+v\nGo rules:\n%+v", cr.Name, cr.Rules, want[cr.Name])
		}
		seen++
	}
	if seen != len(want) {
		t.Errorf("rbac.yaml has %d roles, want %d", seen, len(want))
	}
}

// agentIdentity makes the service account genie-agent of a fresh
// namespace, bound to the genie-agent ClusterRole, and returns a token of
// it bound to the Node named node (created if missing; node "" gives a
// token bound to nothing but a Secret, so it carries no node name).
func agentIdentity(t *testing.T, srv *kubeapi.Server, ns, node string) string {
	t.Helper()
	ctx := t.Context()
	cs, err := srv.Clientset()
	if err != nil {
		t.Fatal(err)
	}
	if node == "" {
		token, _, err := srv.ServiceAccountToken(ctx, ns, kubestore.AgentServiceAccount)
		if err != nil {
			t.Fatal(err)
		}
		return token
	}
	n, err := cs.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: node}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cs.CoreV1().Nodes().Delete(context.Background(), node, metav1.DeleteOptions{}) })
	expiry := int64(3600)
	tr, err := cs.CoreV1().ServiceAccounts(ns).CreateToken(ctx, kubestore.AgentServiceAccount, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &expiry,
			BoundObjectRef: &authenticationv1.BoundObjectReference{Kind: "Node", APIVersion: "v1", Name: n.Name, UID: n.UID}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("token bound to node %s: %v", node, err)
	}
	return tr.Status.Token
}

func agentNamespace(t *testing.T, srv *kubeapi.Server) string {
	t.Helper()
	ctx := t.Context()
	cs, err := srv.Clientset()
	if err != nil {
		t.Fatal(err)
	}
	ns := srv.CreateNamespace(t, "genie-agents")
	if _, err := cs.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: kubestore.AgentServiceAccount}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	crb := &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: ns},
		Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Name: kubestore.AgentServiceAccount, Namespace: ns}},
		RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "genie-agent"}}
	if _, err := cs.RbacV1().ClusterRoleBindings().Create(ctx, crb, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cs.RbacV1().ClusterRoleBindings().Delete(context.Background(), ns, metav1.DeleteOptions{}) })
	return ns
}

func wantRefused(t *testing.T, what string, err error, contains ...string) {
	t.Helper()
	if err == nil {
		t.Errorf("%s: allowed, want refused", what)
		return
	}
	if !apierrors.IsForbidden(errors.Unwrap(err)) && !strings.Contains(err.Error(), "forbidden") && !apierrors.IsForbidden(err) {
		t.Errorf("%s: err = %v, want forbidden", what, err)
	}
	for _, c := range contains {
		if !strings.Contains(err.Error(), c) {
			t.Errorf("%s: error does not say %q: %v", what, c, err)
		}
	}
}

// Two agents, each with a service-account token bound to its own Node,
// on the real API server under deploy/policy: each runs its node's whole
// life cycle (register, claim, publish, withdraw, release); neither can
// re-point the other's underlay address, publish or take over an
// endpoint or a block in the other's name, or free the other's block,
// whether through the store or with raw writes; an agent identity
// without a node may write nothing; agents cannot create VPCs.
func TestAgentNodeScope(t *testing.T) {
	srv := server(t)
	ctx := t.Context()
	sc := scope()
	admin := open(t, srv.RESTConfig(), sc)
	if _, err := admin.CreateVPC(ctx, vpc.VPC{Name: "blue", CIDR: netip.MustParsePrefix("10.1.0.0/16")}); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.CreateSubnet(ctx, vpc.Subnet{VPC: "blue", Name: "web", CIDR: netip.MustParsePrefix("10.1.0.0/24")}); err != nil {
		t.Fatal(err)
	}
	ns := agentNamespace(t, srv)
	nodeA, nodeB := kubeapi.UniqueName("node-a"), kubeapi.UniqueName("node-b")
	cfgA := srv.RESTConfigForToken(agentIdentity(t, srv, ns, nodeA))
	cfgB := srv.RESTConfigForToken(agentIdentity(t, srv, ns, nodeB))
	a, b := open(t, cfgA, sc), open(t, cfgB, sc)

	node := func(name, ip string) vpc.Node { return vpc.Node{Name: name, UnderlayIP: netip.MustParseAddr(ip)} }
	if err := b.RegisterNode(ctx, node(nodeB, "192.0.2.2")); err != nil {
		t.Fatalf("agent b registers its node: %v", err)
	}
	if err := a.RegisterNode(ctx, node(nodeA, "192.0.2.1")); err != nil {
		t.Fatalf("agent a registers its node: %v", err)
	}
	// The attack of #7.6: re-point another node's underlay address.
	wantRefused(t, "agent a re-points node b", a.RegisterNode(ctx, node(nodeB, "192.0.2.66")),
		"the genie agent of node "+nodeA+" may not", "genienodes", "of node "+nodeB)
	if n, err := admin.GetNode(ctx, nodeB); err != nil || n.UnderlayIP != netip.MustParseAddr("192.0.2.2") {
		t.Fatalf("node b after the attempt: %+v, %v", n, err)
	}
	wantRefused(t, "agent a registers a node in b's name... of a third node", a.RegisterNode(ctx, node(kubeapi.UniqueName("node-c"), "192.0.2.3")),
		"may not create genienodes")

	// Each agent's own life cycle works.
	blkA, err := a.ClaimBlock(ctx, "blue", "web", nodeA)
	if err != nil {
		t.Fatalf("agent a claims a block: %v", err)
	}
	blkB, err := b.ClaimBlock(ctx, "blue", "web", nodeB)
	if err != nil {
		t.Fatalf("agent b claims a block: %v", err)
	}
	epA := vpc.Endpoint{VPC: "blue", Subnet: "web", ID: "ca/eth0", IP: blkA.CIDR.Addr().Next().Next(), Node: nodeA}
	if _, err := a.PutEndpoint(ctx, epA); err != nil {
		t.Fatalf("agent a publishes its endpoint: %v", err)
	}
	epB := vpc.Endpoint{VPC: "blue", Subnet: "web", ID: "cb/eth0", IP: blkB.CIDR.Addr().Next(), Node: nodeB}
	if _, err := b.PutEndpoint(ctx, epB); err != nil {
		t.Fatalf("agent b publishes its endpoint: %v", err)
	}

	// In the other's name, through the store.
	_, err = a.ClaimBlock(ctx, "blue", "web", nodeB)
	wantRefused(t, "agent a claims a block for node b", err, "may not create ipamblocks")
	forged := vpc.Endpoint{VPC: "blue", Subnet: "web", ID: "evil/eth0", IP: blkB.CIDR.Addr().Next().Next(), Node: nodeB}
	_, err = a.PutEndpoint(ctx, forged)
	wantRefused(t, "agent a publishes an endpoint of node b", err, "may not create")
	wantRefused(t, "agent a releases node b's block", a.ReleaseBlock(ctx, "blue", "web", blkB.CIDR, nodeB), "may not delete ipamblocks")

	// And with raw writes, bypassing the store's own checks.
	d := dyn(t, cfgA)
	epName := sc + ".blue." + strings.ReplaceAll(epB.IP.String(), ".", "-")
	u, err := d.Resource(gvr("vpcendpoints")).Get(ctx, epName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	_ = unstructured.SetNestedField(u.Object, nodeA, "spec", "node")
	_, err = d.Resource(gvr("vpcendpoints")).Update(ctx, u, metav1.UpdateOptions{})
	wantRefused(t, "agent a takes over node b's endpoint", err, "may not update vpcendpoints", "of node "+nodeB)
	gn, err := d.Resource(gvr("genienodes")).Get(ctx, sc+"."+nodeB, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	_ = unstructured.SetNestedField(gn.Object, "192.0.2.66", "spec", "underlayIP")
	_, err = d.Resource(gvr("genienodes")).Update(ctx, gn, metav1.UpdateOptions{})
	wantRefused(t, "agent a rewrites node b's underlay address", err, "may not update genienodes", "of node "+nodeB)
	vo, err := d.Resource(gvr("vpcs")).Get(ctx, sc+".blue", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	_ = unstructured.SetNestedMap(vo.Object, map[string]any{"name": "evil", "cidr": "10.1.9.0/24", "gateway": "10.1.9.1",
		"blockPrefixLen": int64(26), "token": "x"}, "status", "pendingSubnet")
	_, err = d.Resource(gvr("vpcs")).UpdateStatus(ctx, vo, metav1.UpdateOptions{})
	wantRefused(t, "agent a writes a vpc's status", err, "may only set the vni")
	err = d.Resource(gvr("vpcendpoints")).Delete(ctx, epName, metav1.DeleteOptions{})
	wantRefused(t, "agent a deletes node b's endpoint", err, "may not delete vpcendpoints")
	if got, err := admin.GetEndpoint(ctx, "blue", epB.ID); err != nil || got.Node != nodeB {
		t.Fatalf("node b's endpoint after the attempts: %+v, %v", got, err)
	}

	// Own withdrawals work.
	if err := a.DeleteEndpoint(ctx, "blue", epA.ID); err != nil {
		t.Fatalf("agent a withdraws its endpoint: %v", err)
	}
	if err := a.ReleaseBlock(ctx, "blue", "web", blkA.CIDR, nodeA); err != nil {
		t.Fatalf("agent a releases its block: %v", err)
	}

	// Agents do not manage the network.
	_, err = a.CreateVPC(ctx, vpc.VPC{Name: "red", CIDR: netip.MustParsePrefix("10.2.0.0/16")})
	wantRefused(t, "agent a creates a vpc", err)

	// An agent identity without a node may write nothing.
	nobody := open(t, srv.RESTConfigForToken(agentIdentity(t, srv, ns, "")), sc)
	wantRefused(t, "an agent token without a node registers a node", nobody.RegisterNode(ctx, node(kubeapi.UniqueName("node-x"), "192.0.2.9")),
		"has no node identity")
	if _, err := nobody.GetVPC(ctx, "blue"); err != nil {
		t.Errorf("an agent token without a node reads: %v", err)
	}
}

// Objects written with kubectl pass the same per-object rules as the
// store's: a VPCEndpoint must carry its VPC's label and be named after
// its VPC and IP.
func TestObjectConsistencyPolicy(t *testing.T) {
	srv := server(t)
	ctx := t.Context()
	sc := scope()
	d := dyn(t, srv.RESTConfig())
	spec := map[string]any{"vpc": "blue", "subnet": "web", "id": "k/eth0", "ip": "10.1.0.9", "node": "n1"}
	mislabelled := raw("VPCEndpoint", sc+".blue.10-1-0-9", sc, spec)
	mislabelled.SetLabels(map[string]string{kubestore.LabelScope: sc, kubestore.LabelVPC: "red"})
	_, err := d.Resource(gvr("vpcendpoints")).Create(ctx, mislabelled, metav1.CreateOptions{})
	if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), "label genie.cni.io/vpc must be blue") {
		t.Errorf("endpoint labelled into another vpc: %v", err)
	}
	misnamed := raw("VPCEndpoint", sc+".blue.10-1-0-10", sc, spec)
	misnamed.SetLabels(map[string]string{kubestore.LabelScope: sc, kubestore.LabelVPC: "blue"})
	_, err = d.Resource(gvr("vpcendpoints")).Create(ctx, misnamed, metav1.CreateOptions{})
	if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), "must be named "+sc+".blue.10-1-0-9") {
		t.Errorf("endpoint named after another ip: %v", err)
	}
	gw := raw("VPCEgressGateway", sc+".blue.other", sc, map[string]any{"vpc": "blue", "name": "out", "destinations": []any{"0.0.0.0/0"}, "nodes": []any{"n1"}})
	gw.SetLabels(map[string]string{kubestore.LabelScope: sc, kubestore.LabelVPC: "blue"})
	_, err = d.Resource(gvr("vpcegressgateways")).Create(ctx, gw, metav1.CreateOptions{})
	if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), "must be named "+sc+".blue.out") {
		t.Errorf("egress gateway named after another: %v", err)
	}
}

// Cross-object rules for objects made with kubectl: a Subnet object
// outside its VPC's CIDR, or overlapping an older sibling, is ignored by
// the paths agents use (GetSubnet, ClaimBlock) with an error naming the
// conflict (vpc.ErrInvalid: CNI code 7); the valid sibling keeps working.
func TestKubectlSubnetCrossObjectRules(t *testing.T) {
	srv := server(t)
	ctx := t.Context()
	sc := scope()
	s := open(t, srv.RESTConfig(), sc)
	if _, err := s.CreateVPC(ctx, vpc.VPC{Name: "blue", CIDR: netip.MustParsePrefix("10.1.0.0/16")}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateSubnet(ctx, vpc.Subnet{VPC: "blue", Name: "web", CIDR: netip.MustParsePrefix("10.1.0.0/24")}); err != nil {
		t.Fatal(err)
	}
	d := dyn(t, srv.RESTConfig())
	kubectl := func(name, cidr, gw string) {
		t.Helper()
		u := raw("Subnet", sc+".blue."+name, sc, map[string]any{"vpc": "blue", "name": name, "cidr": cidr, "gateway": gw, "blockPrefixLen": int64(26)})
		u.SetLabels(map[string]string{kubestore.LabelScope: sc, kubestore.LabelVPC: "blue"})
		if _, err := d.Resource(gvr("subnets")).Create(ctx, u, metav1.CreateOptions{}); err != nil {
			t.Fatalf("kubectl create subnet %s: %v", name, err)
		}
	}
	kubectl("outside", "10.2.0.0/24", "10.2.0.1")
	kubectl("overlap", "10.1.0.128/25", "10.1.0.129")
	for _, c := range []struct{ name, says string }{
		{"outside", "cidr 10.2.0.0/24 is outside vpc \"blue\" 10.1.0.0/16"},
		{"overlap", `10.1.0.128/25 overlaps the older subnet "blue/web" 10.1.0.0/24`},
	} {
		_, err := s.GetSubnet(ctx, "blue", c.name)
		if !errors.Is(err, vpc.ErrInvalid) || !strings.Contains(err.Error(), c.says) {
			t.Errorf("get kubectl subnet %s: %v, want vpc.ErrInvalid saying %q", c.name, err, c.says)
		}
		_, err = s.ClaimBlock(ctx, "blue", c.name, "n1")
		if !errors.Is(err, vpc.ErrInvalid) || !strings.Contains(err.Error(), c.says) {
			t.Errorf("claim in kubectl subnet %s: %v, want vpc.ErrInvalid saying %q", c.name, err, c.says)
		}
	}
	if _, err := s.GetSubnet(ctx, "blue", "web"); err != nil {
		t.Errorf("the valid, older subnet: %v", err)
	}
	if _, err := s.ClaimBlock(ctx, "blue", "web", "n1"); err != nil {
		t.Errorf("claim in the valid subnet: %v", err)
	}
}

// The per-node user identity (genie:node:<node>, a certificate or token
// per node instead of a service account) is scoped the same way.
func TestAgentNodeScopeUserIdentity(t *testing.T) {
	token := "node-token-" + kubeapi.UniqueName("x")
	srv := kubeapi.New(t, kubeapi.Options{Tokens: []kubeapi.Token{{Token: token, User: kubestore.AgentUserPrefix + "n1", UID: "n1"}}})
	ctx := t.Context()
	if err := srv.InstallProjectCRDs(ctx, kubestore.CRDFiles...); err != nil {
		t.Fatal(err)
	}
	if err := installPolicies(srv); err != nil {
		t.Fatal(err)
	}
	cs, err := srv.Clientset()
	if err != nil {
		t.Fatal(err)
	}
	crb := &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "genie-node-n1"},
		Subjects: []rbacv1.Subject{{Kind: "User", APIGroup: "rbac.authorization.k8s.io", Name: kubestore.AgentUserPrefix + "n1"}},
		RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "genie-agent"}}
	if _, err := cs.RbacV1().ClusterRoleBindings().Create(ctx, crb, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	admin := open(t, srv.RESTConfig(), "")
	if err := admin.RegisterNode(ctx, vpc.Node{Name: "n2", UnderlayIP: netip.MustParseAddr("192.0.2.2")}); err != nil {
		t.Fatal(err)
	}
	n1 := open(t, srv.RESTConfigForToken(token), "")
	if err := n1.RegisterNode(ctx, vpc.Node{Name: "n1", UnderlayIP: netip.MustParseAddr("192.0.2.1")}); err != nil {
		t.Fatalf("genie:node:n1 registers n1: %v", err)
	}
	wantRefused(t, "genie:node:n1 re-points n2", n1.RegisterNode(ctx, vpc.Node{Name: "n2", UnderlayIP: netip.MustParseAddr("192.0.2.66")}),
		"the genie agent of node n1 may not", "of node n2")
}

// A service's backends are written by the elected resolver only: on the
// real API server under deploy/policy (genie-service-resolver bound to the
// resolver's Lease, as the chart binds it), an agent that does not hold
// the Lease is refused, the holder may write, and leadership moving moves
// the right with it.
func TestServiceResolverPolicy(t *testing.T) {
	srv := server(t)
	ctx := t.Context()
	sc := scope()
	admin := open(t, srv.RESTConfig(), sc)
	if _, err := admin.CreateVPC(ctx, vpc.VPC{Name: "blue", CIDR: netip.MustParsePrefix("10.1.0.0/16")}); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.CreateService(ctx, service.Service{VPC: "blue", Name: "web",
		Ports: []service.Port{{Port: 80, Protocol: service.TCP}}, Selector: map[string]string{"app": "web"}}); err != nil {
		t.Fatal(err)
	}
	ns := agentNamespace(t, srv)
	nodeA, nodeB := kubeapi.UniqueName("node-a"), kubeapi.UniqueName("node-b")
	opts := kubestore.Options{Scope: sc, LeaseNamespace: ns, LeaseDuration: 4 * time.Second}
	agent := func(node string) *kubestore.Store {
		s, err := kubestore.NewForConfig(ctx, srv.RESTConfigForToken(agentIdentity(t, srv, ns, node)), opts)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	a, b := agent(nodeA), agent(nodeB)

	// The chart's binding, narrowed to this test's objects.
	cs, err := srv.Clientset()
	if err != nil {
		t.Fatal(err)
	}
	notFound := admissionv1.DenyAction
	binding := &admissionv1.ValidatingAdmissionPolicyBinding{ObjectMeta: metav1.ObjectMeta{Name: sc + "-resolver"},
		Spec: admissionv1.ValidatingAdmissionPolicyBindingSpec{
			PolicyName:        "genie-service-resolver",
			ParamRef:          &admissionv1.ParamRef{Name: sc + ".service-resolver", Namespace: ns, ParameterNotFoundAction: &notFound},
			ValidationActions: []admissionv1.ValidationAction{admissionv1.Deny},
			MatchResources: &admissionv1.MatchResources{ObjectSelector: &metav1.LabelSelector{
				MatchLabels: map[string]string{kubestore.LabelScope: sc}}},
		}}
	if _, err := cs.AdmissionregistrationV1().ValidatingAdmissionPolicyBindings().Create(ctx, binding, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cs.AdmissionregistrationV1().ValidatingAdmissionPolicyBindings().Delete(context.Background(), binding.Name, metav1.DeleteOptions{})
	})

	lead := func(s *kubestore.Store, id string) (stop func()) {
		lctx, cancel := context.WithCancel(ctx)
		led, done := make(chan struct{}), make(chan struct{})
		go func() {
			defer close(done)
			_ = s.Lead(lctx, "service-resolver", id, func(c context.Context) { close(led); <-c.Done() })
		}()
		select {
		case <-led:
		case <-time.After(20 * time.Second):
			t.Fatalf("%s does not lead", id)
		}
		return func() { cancel(); <-done }
	}
	bk := service.Backends{VPC: "blue", Service: "web", Backends: []service.Backend{{IP: netip.MustParseAddr("10.1.0.5"), Node: nodeA, Endpoint: "c/eth0"}}}
	stopA := lead(a, nodeA)
	// The binding takes effect a moment after its creation.
	var berr error
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		berr = b.PutServiceBackends(ctx, bk)
		if berr != nil || time.Now().After(deadline) {
			break
		}
	}
	wantRefused(t, "agent b, not the resolver, writes backends", berr,
		"the genie agent of node "+nodeB+" may not write the backends", "the service resolver is "+nodeA)
	if err := a.PutServiceBackends(ctx, bk); err != nil {
		t.Fatalf("the resolver (a) writes backends: %v", err)
	}
	stopA() // releases the Lease
	stopB := lead(b, nodeB)
	defer stopB()
	bk.Backends[0].IP = netip.MustParseAddr("10.1.0.6")
	if err := b.PutServiceBackends(ctx, bk); err != nil {
		t.Fatalf("the new resolver (b) writes backends: %v", err)
	}
	wantRefused(t, "agent a, no longer the resolver, writes backends", a.PutServiceBackends(ctx, bk), "the service resolver is "+nodeB)
}

// controllerIdentity makes the service account genie-service-controller of
// a fresh namespace, bound to its ClusterRole, and returns a token.
func controllerIdentity(t *testing.T, srv *kubeapi.Server) string {
	t.Helper()
	ctx := t.Context()
	cs, err := srv.Clientset()
	if err != nil {
		t.Fatal(err)
	}
	ns := srv.CreateNamespace(t, "genie-svcctl")
	token, _, err := srv.ServiceAccountToken(ctx, ns, kubestore.ServiceControllerAccount)
	if err != nil {
		t.Fatal(err)
	}
	crb := &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: ns},
		Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Name: kubestore.ServiceControllerAccount, Namespace: ns}},
		RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "genie-service-controller"}}
	if _, err := cs.RbacV1().ClusterRoleBindings().Create(ctx, crb, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cs.RbacV1().ClusterRoleBindings().Delete(context.Background(), ns, metav1.DeleteOptions{}) })
	return token
}

// The service controller's identity (genie-service-controller) creates
// and deletes services, its VPC status write limited to the fence, and
// manages nothing else: no subnets, no pending subnet, no VNI.
func TestServiceControllerScope(t *testing.T) {
	srv := server(t)
	ctx := t.Context()
	sc := scope()
	admin := open(t, srv.RESTConfig(), sc)
	if _, err := admin.CreateVPC(ctx, vpc.VPC{Name: "blue", CIDR: netip.MustParsePrefix("10.1.0.0/16")}); err != nil {
		t.Fatal(err)
	}
	cfg := srv.RESTConfigForToken(controllerIdentity(t, srv))
	ctl := open(t, cfg, sc)
	sv := service.Service{VPC: "blue", Name: "web", Ports: []service.Port{{Port: 80, Protocol: service.TCP}}, Selector: map[string]string{"app": "web"}}
	if _, err := ctl.CreateService(ctx, sv); err != nil {
		t.Fatalf("the controller creates a service: %v", err)
	}
	if err := ctl.DeleteService(ctx, "blue", "web"); err != nil {
		t.Fatalf("the controller deletes a service: %v", err)
	}
	_, err := ctl.CreateSubnet(ctx, vpc.Subnet{VPC: "blue", Name: "web", CIDR: netip.MustParsePrefix("10.1.0.0/24")})
	wantRefused(t, "the controller creates a subnet", err)
	d := dyn(t, cfg)
	vo, err := d.Resource(gvr("vpcs")).Get(ctx, sc+".blue", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	_ = unstructured.SetNestedMap(vo.Object, map[string]any{"name": "evil", "cidr": "10.1.9.0/24", "gateway": "10.1.9.1",
		"blockPrefixLen": int64(26), "token": "x"}, "status", "pendingSubnet")
	_, err = d.Resource(gvr("vpcs")).UpdateStatus(ctx, vo, metav1.UpdateOptions{})
	wantRefused(t, "the controller writes a pending subnet", err, "may only bump status.services")
}
