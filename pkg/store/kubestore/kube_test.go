package kubestore_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"

	"github.com/cni-genie/cni-genie/pkg/store"
	"github.com/cni-genie/cni-genie/pkg/store/kubestore"
	"github.com/cni-genie/cni-genie/pkg/store/storetest"
	"github.com/cni-genie/cni-genie/pkg/testutil/kubeapi"
	"github.com/cni-genie/cni-genie/pkg/vpc"
)

func gvr(plural string) schema.GroupVersionResource {
	return schema.GroupVersionResource{Group: kubestore.Group, Version: kubestore.Version, Resource: plural}
}

func dyn(t *testing.T, cfg *rest.Config) dynamic.Interface {
	t.Helper()
	d, err := dynamic.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// raw builds an object as a user would write it with kubectl.
func raw(kind, name, scope string, spec map[string]any) *unstructured.Unstructured {
	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": kubestore.Group + "/" + kubestore.Version,
		"kind":       kind,
		"metadata":   map[string]any{"name": name, "labels": map[string]any{kubestore.LabelScope: scope}},
		"spec":       spec,
	}}
	return u
}

// A watch from a revision the API server no longer has yields ErrCompacted.
func TestWatchCompacted(t *testing.T) {
	cfg := server(t).RESTConfig()
	s := open(t, cfg, scope())
	storetest.RegisterNodes(t, s, "n1")
	for _, ev := range []store.NodeEvent{<-s.WatchNodes(t.Context(), 1)} {
		if ev.Type != store.EventError || !errors.Is(ev.Err, store.ErrCompacted) || !strings.Contains(ev.Err.Error(), "revision 1") {
			t.Fatalf("event = %+v; want ErrCompacted naming revision 1", ev)
		}
	}
	for _, ev := range []store.EndpointEvent{<-s.WatchEndpoints(t.Context(), "blue", 1)} {
		if ev.Type != store.EventError || !errors.Is(ev.Err, store.ErrCompacted) || !strings.Contains(ev.Err.Error(), `vpc "blue"`) {
			t.Fatalf("event = %+v; want ErrCompacted naming the vpc", ev)
		}
	}
}

// The CRDs' schemas refuse malformed objects written past the store (e.g.
// with kubectl), and the fields the store relies on are immutable.
func TestCRDValidation(t *testing.T) {
	cfg := server(t).RESTConfig()
	d := dyn(t, cfg)
	sc := scope()
	ctx := t.Context()
	for _, tc := range []struct {
		plural, kind string
		spec         map[string]any
		want         string
	}{
		{"vpcs", "VPC", map[string]any{"cidr": "10.1.0.1/16"}, "cidr has host bits set"},
		{"vpcs", "VPC", map[string]any{"cidr": "10.1.0.0/33"}, "spec.cidr"},
		{"vpcs", "VPC", map[string]any{"cidr": "fd00::/64"}, "spec.cidr"},
		{"vpcs", "VPC", map[string]any{}, "spec.cidr: Required value"},
		{"subnets", "Subnet", map[string]any{"vpc": "blue", "name": "web", "cidr": "10.1.0.0/24", "gateway": "10.1.1.1", "blockPrefixLen": 26}, "gateway is outside cidr"},
		{"subnets", "Subnet", map[string]any{"vpc": "blue", "name": "web", "cidr": "10.1.0.0/24", "gateway": "10.1.0.1", "blockPrefixLen": 20}, "blockPrefixLen is shorter"},
		{"subnets", "Subnet", map[string]any{"vpc": "blue", "name": "web", "cidr": "10.1.0.0/31", "gateway": "10.1.0.1", "blockPrefixLen": 31}, "too small"},
		{"subnets", "Subnet", map[string]any{"vpc": "Blue", "name": "web", "cidr": "10.1.0.0/24", "gateway": "10.1.0.1", "blockPrefixLen": 26}, "spec.vpc"},
		{"subnets", "Subnet", map[string]any{"vpc": "blue", "cidr": "10.1.0.0/24", "gateway": "10.1.0.1", "blockPrefixLen": 26}, "spec.name: Required value"},
		{"genienodes", "GenieNode", map[string]any{"name": "n1", "underlayIP": "300.0.0.1"}, "spec.underlayIP"},
		{"genienodes", "GenieNode", map[string]any{"name": "n1", "underlayIP": "192.0.2.1", "underlayMAC": "02:00:00:00:00"}, "spec.underlayMAC"},
		{"ipamblocks", "IPAMBlock", map[string]any{"vpc": "blue", "subnet": "web", "subnetUID": "x", "cidr": "10.1.0.0/26"}, "spec.node: Required value"},
		{"vpcendpoints", "VPCEndpoint", map[string]any{"vpc": "blue", "subnet": "web", "id": "c 1", "ip": "10.1.0.2", "node": "n1"}, "spec.id"},
		{"vniclaims", "VNIClaim", map[string]any{"vni": 16777216, "vpc": "blue", "vpcUID": "x"}, "spec.vni"},
	} {
		_, err := d.Resource(gvr(tc.plural)).Create(ctx, raw(tc.kind, kubeapi.UniqueName(sc), sc, tc.spec), metav1.CreateOptions{})
		if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("create %s %v: err = %v; want Invalid containing %q", tc.kind, tc.spec, err, tc.want)
		}
	}

	// Immutability: a VPC's CIDR, and its VNI once set.
	s := open(t, cfg, sc)
	v := storetest.MustVPC(t, s, "blue", "10.1.0.0/16")
	vpcs := d.Resource(gvr("vpcs"))
	u, err := vpcs.Get(ctx, sc+".blue", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got, _, _ := unstructured.NestedInt64(u.Object, "status", "vni"); got != int64(v.VNI) {
		t.Fatalf("status.vni = %d, want %d", got, v.VNI)
	}
	c := u.DeepCopy()
	unstructured.SetNestedField(c.Object, "10.2.0.0/16", "spec", "cidr")
	if _, err := vpcs.Update(ctx, c, metav1.UpdateOptions{}); !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), "spec is immutable") {
		t.Errorf("change vpc cidr: err = %v; want immutable", err)
	}
	c = u.DeepCopy()
	unstructured.SetNestedField(c.Object, int64(v.VNI+100), "status", "vni")
	if _, err := vpcs.UpdateStatus(ctx, c, metav1.UpdateOptions{}); !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), "vni is immutable") {
		t.Errorf("change vpc vni: err = %v; want immutable", err)
	}
	// A create cannot forge a VNI: status is a subresource.
	forged := raw("VPC", sc+".forged", sc, map[string]any{"cidr": "10.9.0.0/16"})
	forged.Object["status"] = map[string]any{"vni": int64(v.VNI)}
	if _, err := vpcs.Create(ctx, forged, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if got, err := s.GetVPC(ctx, "forged"); err != nil || got.VNI == v.VNI || got.VNI == 0 {
		t.Fatalf("vpc created with a forged status = %+v, %v; want its own vni", got, err)
	}
}

// kubectl get shows the printer columns of the CRDs, filled from the
// objects the store writes.
func TestPrinterColumns(t *testing.T) {
	cfg := server(t).RESTConfig()
	sc := scope()
	ctx := t.Context()
	s := open(t, cfg, sc)
	storetest.MustVPC(t, s, "blue", "10.1.0.0/16")
	storetest.MustSubnet(t, s, "blue", "web", "10.1.0.0/24")
	storetest.RegisterNodes(t, s, "n1")
	if _, err := s.ClaimBlock(ctx, "blue", "web", "n1"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.PutEndpoint(ctx, vpc.Endpoint{VPC: "blue", Subnet: "web", ID: "abc/eth1", PodNamespace: "default", PodName: "a",
		Interface: "eth1", IP: netip.MustParseAddr("10.1.0.5"), Node: "n1"}); err != nil {
		t.Fatal(err)
	}
	hc, err := rest.HTTPClientFor(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ plural, name, want string }{
		{"vpcs", sc + ".blue", "CIDR=10.1.0.0/16 VNI=1"},
		{"subnets", sc + ".blue.web", "VPC=blue CIDR=10.1.0.0/24 Gateway=10.1.0.1 Block=28"},
		{"genienodes", sc + ".n1", "Underlay-IP=192.0.2.1 Underlay-MAC=02:00:00:00:00:01"},
		{"ipamblocks", sc + ".blue.web.10-1-0-0-28", "VPC=blue Subnet=web CIDR=10.1.0.0/28 Node=n1"},
		{"vpcendpoints", sc + ".blue.10-1-0-5", "VPC=blue Subnet=web IP=10.1.0.5 Node=n1 Namespace=default Pod=a Interface=eth1"},
		{"vniclaims", sc + ".vni-1", "VNI=1 VPC=blue"},
	} {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("%s/apis/%s/%s/%s/%s", cfg.Host, kubestore.Group, kubestore.Version, tc.plural, tc.name), nil)
		req.Header.Set("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io")
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var tbl metav1.Table
		if err := json.Unmarshal(body, &tbl); err != nil || resp.StatusCode != 200 || len(tbl.Rows) != 1 {
			t.Fatalf("table of %s %s: %d %s (%v)", tc.plural, tc.name, resp.StatusCode, body, err)
		}
		var cells []string
		for i, c := range tbl.ColumnDefinitions {
			if c.Name == "Name" || c.Name == "Age" {
				continue
			}
			cells = append(cells, fmt.Sprintf("%s=%v", c.Name, tbl.Rows[0].Cells[i]))
		}
		if got := strings.Join(cells, " "); !strings.HasPrefix(got, tc.want) {
			t.Errorf("kubectl get %s %s: columns %q, want prefix %q", tc.plural, tc.name, got, tc.want)
		}
	}
}

// Stores of different scopes share a cluster without seeing each other;
// the unscoped store ignores scoped objects.
func TestScopeIsolation(t *testing.T) {
	cfg := server(t).RESTConfig()
	ctx := t.Context()
	a, b := open(t, cfg, scope()), open(t, cfg, scope())
	va := storetest.MustVPC(t, a, "blue", "10.1.0.0/16")
	vb := storetest.MustVPC(t, b, "blue", "10.2.0.0/16")
	if va.VNI != 1 || vb.VNI != 1 {
		t.Fatalf("vnis = %d, %d; want 1 in each scope", va.VNI, vb.VNI)
	}
	if l, err := a.ListVPCs(ctx); err != nil || len(l) != 1 || l[0].CIDR != va.CIDR {
		t.Fatalf("scope a lists %+v, %v", l, err)
	}
	u := open(t, cfg, "")
	if l, err := u.ListVPCs(ctx); err != nil || len(l) != 0 {
		t.Fatalf("unscoped store lists %+v, %v", l, err)
	}
	if _, err := kubestore.NewForConfig(ctx, cfg, kubestore.Options{Scope: "Bad_Scope"}); !errors.Is(err, vpc.ErrInvalid) {
		t.Fatalf("bad scope: %v", err)
	}
}

// Leftovers of interrupted operations (or of kubectl) are completed or
// collected, never left blocking a name, a VNI, an address or a block.
func TestRecovery(t *testing.T) {
	cfg := server(t).RESTConfig()
	d := dyn(t, cfg)
	sc := scope()
	ctx := t.Context()
	s := open(t, cfg, sc)

	// A stale VNI claim (its VPC UID does not exist) does not hold VNI 1.
	if _, err := d.Resource(gvr("vniclaims")).Create(ctx, raw("VNIClaim", sc+".vni-1", sc,
		map[string]any{"vni": int64(1), "vpc": "gone", "vpcUID": "00000000-dead"}), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if v := storetest.MustVPC(t, s, "blue", "10.1.0.0/16"); v.VNI != 1 {
		t.Fatalf("vni with a stale claim of 1 = %d, want 1", v.VNI)
	}

	// A VPC created with kubectl gets its VNI at the first read.
	if _, err := d.Resource(gvr("vpcs")).Create(ctx, raw("VPC", sc+".red", sc, map[string]any{"cidr": "10.1.0.0/16"}), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if v, err := s.GetVPC(ctx, "red"); err != nil || v.VNI != 2 {
		t.Fatalf("kubectl-made vpc = %+v, %v; want vni 2", v, err)
	}

	// A subnet creation interrupted after its reservation is finished by
	// the next creator, and its CIDR is taken into account.
	vpcs := d.Resource(gvr("vpcs"))
	u, err := vpcs.Get(ctx, sc+".blue", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	unstructured.SetNestedMap(u.Object, map[string]any{"name": "web", "cidr": "10.1.0.0/24", "gateway": "10.1.0.1",
		"blockPrefixLen": int64(26), "token": "interrupted"}, "status", "pendingSubnet")
	if _, err := vpcs.UpdateStatus(ctx, u, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	_, err = s.CreateSubnet(ctx, vpc.Subnet{VPC: "blue", Name: "db", CIDR: netip.MustParsePrefix("10.1.0.128/25")})
	if !errors.Is(err, store.ErrConflict) || !strings.Contains(err.Error(), `overlaps subnet "blue/web" 10.1.0.0/24`) {
		t.Fatalf("create over an interrupted reservation: %v", err)
	}
	if sn, err := s.GetSubnet(ctx, "blue", "web"); err != nil || sn.Gateway != netip.MustParseAddr("10.1.0.1") {
		t.Fatalf("rolled-forward subnet = %+v, %v", sn, err)
	}
	u, _ = vpcs.Get(ctx, sc+".blue", metav1.GetOptions{})
	if _, found, _ := unstructured.NestedMap(u.Object, "status", "pendingSubnet"); found {
		t.Fatal("pendingSubnet left after roll-forward")
	}

	// A block of an earlier subnet of the same name is collected.
	stale := raw("IPAMBlock", sc+".blue.web.10-1-0-0-26", sc, map[string]any{
		"vpc": "blue", "subnet": "web", "subnetUID": "old-uid", "cidr": "10.1.0.0/26", "node": "old-node"})
	stale.SetLabels(map[string]string{kubestore.LabelScope: sc, kubestore.LabelVPC: "blue", kubestore.LabelSubnet: "web"})
	if _, err := d.Resource(gvr("ipamblocks")).Create(ctx, stale, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if b, err := s.ClaimBlock(ctx, "blue", "web", "n1"); err != nil || b.CIDR != netip.MustParsePrefix("10.1.0.0/26") {
		t.Fatalf("claim over a stale block = %+v, %v", b, err)
	}

	// An endpoint index without its endpoint (put interrupted between
	// the two writes) holds no address, and deleting its id harms no one.
	// The index of id is named <vpc>.<first 20 bytes of sha256(id) in hex>.
	h := sha256.Sum256([]byte("dead/eth0"))
	dead := raw("EndpointIndex", sc+".blue."+hex.EncodeToString(h[:20]), sc, map[string]any{"vpc": "blue", "id": "dead/eth0", "ip": "10.1.0.5"})
	dead.SetLabels(map[string]string{kubestore.LabelScope: sc, kubestore.LabelVPC: "blue"})
	if _, err := d.Resource(gvr("endpointindexes")).Create(ctx, dead, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	live := vpc.Endpoint{VPC: "blue", Subnet: "web", ID: "live/eth0", IP: netip.MustParseAddr("10.1.0.5"), Node: "n1"}
	if _, err := s.PutEndpoint(ctx, live); err != nil {
		t.Fatalf("put over a dangling index: %v", err)
	}
	if _, err := s.GetEndpoint(ctx, "blue", "dead/eth0"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("get dangling id: %v", err)
	}
	if err := s.DeleteEndpoint(ctx, "blue", "dead/eth0"); err != nil {
		t.Fatal(err)
	}
	if e, err := s.GetEndpoint(ctx, "blue", "live/eth0"); err != nil || e.IP != live.IP {
		t.Fatalf("live endpoint after deleting the dangling id = %+v, %v", e, err)
	}

	// Deleting the VPC collects indexes left behind.
	left := raw("EndpointIndex", sc+".blue."+strings.Repeat("0", 40), sc, map[string]any{"vpc": "blue", "id": "left/eth0", "ip": "10.1.0.7"})
	left.SetLabels(map[string]string{kubestore.LabelScope: sc, kubestore.LabelVPC: "blue"})
	if _, err := d.Resource(gvr("endpointindexes")).Create(ctx, left, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteEndpoint(ctx, "blue", "live/eth0"); err != nil {
		t.Fatal(err)
	}
	for _, sn := range []string{"web"} {
		if err := s.DeleteSubnet(ctx, "blue", sn); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.DeleteVPC(ctx, "blue"); err != nil {
		t.Fatal(err)
	}
	idx, err := d.Resource(gvr("endpointindexes")).List(ctx, metav1.ListOptions{LabelSelector: kubestore.LabelScope + "=" + sc})
	if err != nil || len(idx.Items) != 0 {
		t.Fatalf("indexes left after the vpc's deletion: %d, %v", len(idx.Items), err)
	}
}

// A private API server that ends watches after 1-2 s and starts without
// the CRDs: New explains what is missing, and a watch outlives many
// server-side closes without a gap or an error.
func TestWatchAcrossServerTimeouts(t *testing.T) {
	srv := kubeapi.New(t, kubeapi.Options{ExtraArgs: []string{"--min-request-timeout=1"}})
	cfg := srv.RESTConfig()
	ctx := t.Context()
	_, err := kubestore.NewForConfig(ctx, cfg, kubestore.Options{})
	if !errors.Is(err, store.ErrNotFound) || !strings.Contains(err.Error(), "install deploy/crds") {
		t.Fatalf("connect without crds: %v", err)
	}
	if err := srv.InstallProjectCRDs(ctx, kubestore.CRDFiles...); err != nil {
		t.Fatal(err)
	}
	s := open(t, cfg, "")
	_, rev, err := s.ListNodes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	events := s.WatchNodes(wctx, rev)
	const n = 16
	go func() {
		for i := range n {
			if err := s.RegisterNode(wctx, vpc.Node{Name: fmt.Sprintf("n%02d", i), UnderlayIP: netip.AddrFrom4([4]byte{192, 0, 2, byte(i + 1)})}); err != nil {
				return
			}
			select {
			case <-wctx.Done():
				return
			case <-time.After(400 * time.Millisecond): // spans several 1-2 s watch lifetimes
			}
		}
	}()
	for i := range n {
		select {
		case ev := <-events:
			if ev.Type != store.EventPut || ev.Node.Name != fmt.Sprintf("n%02d", i) {
				t.Fatalf("event %d = %+v", i, ev)
			}
		case <-time.After(storetest.EventTimeout):
			t.Fatalf("no event %d", i)
		}
	}
}

// A watch across a restart of kube-apiserver retries while the server is
// down instead of failing on the refused connection. The restarted
// server's watch cache starts at the current revision, so the watch then
// either continues or reports ErrCompacted (never another error); a
// consumer that lists again on ErrCompacted, as the contract says, ends
// with every change.
func TestWatchAcrossAPIServerRestart(t *testing.T) {
	srv := kubeapi.New(t, kubeapi.Options{})
	ctx := t.Context()
	if err := srv.InstallProjectCRDs(ctx, kubestore.CRDFiles...); err != nil {
		t.Fatal(err)
	}
	s := open(t, srv.RESTConfig(), "")
	storetest.RegisterNodes(t, s, "before")
	_, rev, err := s.ListNodes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	events := s.WatchNodes(wctx, rev)
	storetest.RegisterNodes(t, s, "n1")
	restarted := make(chan error, 1)
	go func() { restarted <- srv.Restart() }()
	// The consumer: a state folded from list + watch events.
	state := map[string]bool{"before": true}
	relists := 0
	for !state["n2"] {
		select {
		case err := <-restarted:
			if err != nil {
				t.Fatal(err)
			}
			storetest.RegisterNodes(t, s, "before", "n1", "n2")
		case ev, ok := <-events:
			switch {
			case !ok:
				t.Fatal("watch closed without an error event")
			case ev.Type == store.EventError && errors.Is(ev.Err, store.ErrCompacted):
				relists++
				nodes, rev, err := s.ListNodes(ctx)
				if err != nil {
					t.Fatal(err)
				}
				clear(state)
				for _, n := range nodes {
					state[n.Name] = true
				}
				events = s.WatchNodes(wctx, rev)
			case ev.Type == store.EventError:
				t.Fatalf("watch failed across the restart with other than ErrCompacted: %v", ev.Err)
			case ev.Type == store.EventPut:
				state[ev.Node.Name] = true
			}
		case <-time.After(2 * time.Minute):
			t.Fatalf("state %v after %d re-lists: want n2", state, relists)
		}
	}
	if !state["n1"] {
		t.Fatalf("state %v: n1 lost", state)
	}
	t.Logf("re-lists after the restart: %d", relists)
}

// A long-lived store whose kubeconfig names a token file (a projected
// service-account token) keeps working when the token is rotated and the
// old one revoked: the request refused with 401 is sent again with the
// new token.
func TestTokenFileRotation(t *testing.T) {
	t.Parallel() // waits out the API server's token cache
	limitedConfig(t)
	srv := server(t)
	ctx := t.Context()
	dir := t.TempDir()
	path, tokenFile := filepath.Join(dir, "kubeconfig"), filepath.Join(dir, "token")
	if err := kubeapi.WriteKubeconfigTokenFile(path, srv.URL, srv.CAData, tokenFile); err != nil {
		t.Fatal(err)
	}
	writeToken := func() (string, func(context.Context) error) {
		tok, revoke, err := srv.ServiceAccountToken(ctx, limited.ns, "genie")
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
	sc := scope()
	s, err := kubestore.New(ctx, path, kubestore.Options{Scope: sc})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	storetest.MustVPC(t, s, "blue", "10.1.0.0/16")

	writeToken()
	if err := revokeOld(ctx); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := kubestore.NewForConfig(ctx, srv.RESTConfigForToken(oldTok), kubestore.Options{})
		if apierrors.IsUnauthorized(err) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("revoked token still accepted: %v", err)
		}
		time.Sleep(250 * time.Millisecond)
	}
	storetest.MustVPC(t, s, "red", "10.1.0.0/16")
	if l, err := s.ListVPCs(ctx); err != nil || len(l) != 2 {
		t.Fatalf("list after rotation = %+v, %v", l, err)
	}

	_, err = kubestore.New(ctx, filepath.Join(dir, "missing"), kubestore.Options{})
	if err == nil || !strings.Contains(err.Error(), filepath.Join(dir, "missing")) {
		t.Fatalf("missing kubeconfig: %v", err)
	}
}

// WatchEndpointsIn delivers the endpoints of the VPCs asked for, through
// one watch, and nothing of the others.
func TestWatchEndpointsIn(t *testing.T) {
	cfg := server(t).RESTConfig()
	ctx := t.Context()
	s := open(t, cfg, scope())
	for _, v := range []string{"a", "b", "c"} {
		storetest.MustVPC(t, s, v, "10.1.0.0/16")
		storetest.MustSubnet(t, s, v, "web", "10.1.0.0/24")
		if _, err := s.ClaimBlock(ctx, v, "web", "n1"); err != nil {
			t.Fatal(err)
		}
	}
	_, rev, err := s.ListEndpoints(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	events := s.WatchEndpointsIn(wctx, []string{"c", "a", "a"}, rev)
	for _, v := range []string{"a", "b", "c", "b", "a"} {
		e := vpc.Endpoint{VPC: v, Subnet: "web", ID: kubeapi.UniqueName("c") + "/eth0", IP: netip.MustParseAddr("10.1.0.9"), Node: "n1"}
		if _, err := s.PutEndpoint(ctx, e); err != nil {
			t.Fatal(err)
		}
		if err := s.DeleteEndpoint(ctx, v, e.ID); err != nil {
			t.Fatal(err)
		}
	}
	var seen []string
	for len(seen) < 6 {
		select {
		case ev := <-events:
			if ev.Type == store.EventError {
				t.Fatal(ev.Err)
			}
			seen = append(seen, ev.Type.String()+" "+ev.Endpoint.VPC)
		case <-time.After(storetest.EventTimeout):
			t.Fatalf("events %v", seen)
		}
	}
	if want := "put a,delete a,put c,delete c,put a,delete a"; strings.Join(seen, ",") != want {
		t.Fatalf("events = %v, want %s", seen, want)
	}
	if _, ok := <-s.WatchEndpointsIn(ctx, nil, rev); ok {
		t.Fatal("watch of no vpc delivered an event")
	}
}
