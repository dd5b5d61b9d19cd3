package cli

import (
	"bytes"
	"encoding/xml"
	"io"
	"net/netip"
	"strings"
	"testing"

	"github.com/cni-genie/cni-genie/pkg/vpc"
)

func graphFixture() *Graph {
	cs := &ClusterStatus{
		Nodes: []NodeStatus{{Name: "n1", Agent: "ready"}, {Name: "n2"}, {Name: "n3"}},
		VPCs: []VPCStatus{{Name: "blue", VNI: 1, CIDR: netip.MustParsePrefix("10.1.0.0/16"), Endpoints: 3},
			{Name: "red", VNI: 2, CIDR: netip.MustParsePrefix("10.1.0.0/16"), Endpoints: 1}},
	}
	eps := []vpc.Endpoint{
		{VPC: "blue", Subnet: "web", ID: "c1/net1", PodNamespace: "default", PodName: "a", Interface: "net1", IP: netip.MustParseAddr("10.1.1.2"), Node: "n1"},
		{VPC: "red", Subnet: "db", ID: "c1/net2", PodNamespace: "default", PodName: "a", Interface: "net2", IP: netip.MustParseAddr("10.1.1.2"), Node: "n1"},
		{VPC: "blue", Subnet: "web", ID: "c2/eth0", PodNamespace: "prod", PodName: "<b&c>", Interface: "eth0", IP: netip.MustParseAddr("10.1.1.3"), Node: "n2"},
		{VPC: "blue", Subnet: "web", ID: "c3/eth1", Interface: "eth1", IP: netip.MustParseAddr("10.1.1.4"), Node: "gone"},
	}
	return BuildGraph(cs, eps)
}

func TestGraphGrouping(t *testing.T) {
	g := graphFixture()
	var names []string
	for _, n := range g.Nodes {
		names = append(names, n.Name)
	}
	if strings.Join(names, ",") != "n1,n2,n3,gone" {
		t.Fatalf("nodes %v: store order, then nodes known only from endpoints", names)
	}
	if len(g.Nodes[0].Pods) != 1 || g.Nodes[0].Pods[0].Name != "default/a" || len(g.Nodes[0].Pods[0].Attachments) != 2 {
		t.Fatalf("n1 pods: %+v", g.Nodes[0].Pods)
	}
	if g.Nodes[3].Pods[0].Name != "c3/eth1" {
		t.Fatalf("an endpoint without a pod name is shown by its ID: %+v", g.Nodes[3].Pods)
	}
}

func TestGraphDOT(t *testing.T) {
	var b bytes.Buffer
	if err := graphFixture().WriteDOT(&b); err != nil {
		t.Fatal(err)
	}
	dot := b.String()
	for _, want := range []string{
		"subgraph cluster_0 {", `label="n1\nagent: ready"`,
		`"pod/n1/default/a" -> "vpc/blue" [label="net1 blue/web 10.1.1.2"`,
		`"pod/n1/default/a" -> "vpc/red" [label="net2 red/db 10.1.1.2"`,
		`"vpc/red" [label="VPC red\nVNI 2  10.1.0.0/16"`,
		`"node/n3/empty" [label="(no VPC pods)"`,
	} {
		if !strings.Contains(dot, want) {
			t.Errorf("DOT lacks %q:\n%s", want, dot)
		}
	}
	if n := strings.Count(dot, " -> "); n != 4 {
		t.Errorf("%d edges, want one per attachment (4)", n)
	}
	if !strings.HasPrefix(dot, "digraph genie {") || !strings.HasSuffix(dot, "}\n") {
		t.Error("not a digraph")
	}
}

// TestGraphSVG parses the SVG as XML (names with markup are escaped) and
// counts its shapes: a box per node and pod and VPC, a line per attachment.
func TestGraphSVG(t *testing.T) {
	var b bytes.Buffer
	if err := graphFixture().WriteSVG(&b); err != nil {
		t.Fatal(err)
	}
	d := xml.NewDecoder(&b)
	counts := map[string]int{}
	var texts []string
	for {
		tok, err := d.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("SVG is not well-formed XML: %v", err)
		}
		switch tk := tok.(type) {
		case xml.StartElement:
			counts[tk.Name.Local]++
		case xml.CharData:
			texts = append(texts, string(tk))
		}
	}
	// 4 nodes + 3 pods + 2 VPCs.
	if counts["rect"] != 9 || counts["line"] != 4 || counts["svg"] != 1 {
		t.Fatalf("shapes %v", counts)
	}
	all := strings.Join(texts, "|")
	for _, want := range []string{"prod/<b&c>", "VPC blue", "VNI 2  10.1.0.0/16  1 endpoints", "net1 10.1.1.2, net2 10.1.1.2"} {
		if !strings.Contains(all, want) {
			t.Errorf("SVG text lacks %q: %s", want, all)
		}
	}
}
