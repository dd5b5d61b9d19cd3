package cli

import (
	"fmt"
	"hash/fnv"
	"html"
	"io"
	"sort"
	"strings"

	"github.com/cni-genie/cni-genie/pkg/vpc"
)

// Graph is the picture `geniectl status --graph` draws: the nodes, each
// with the pods it hosts, and the VPCs, with an edge per VPC attachment
// (pod interface → VPC, labelled with the subnet and address).
type Graph struct {
	Nodes []GraphNode
	VPCs  []VPCStatus
}

// GraphNode is one node and its pods.
type GraphNode struct {
	Name  string
	Agent string
	Pods  []GraphPod
}

// GraphPod is one pod and its VPC attachments.
type GraphPod struct {
	Name        string // namespace/name, or the endpoint ID without a pod name
	Attachments []vpc.Endpoint
}

// BuildGraph groups the endpoints by node and pod, in a stable order.
func BuildGraph(cs *ClusterStatus, eps []vpc.Endpoint) *Graph {
	g := &Graph{VPCs: cs.VPCs}
	byNode := map[string]map[string][]vpc.Endpoint{}
	agent := map[string]string{}
	var order []string
	for _, n := range cs.Nodes {
		byNode[n.Name] = map[string][]vpc.Endpoint{}
		agent[n.Name] = n.Agent
		order = append(order, n.Name)
	}
	for _, e := range eps {
		if byNode[e.Node] == nil {
			byNode[e.Node] = map[string][]vpc.Endpoint{}
			order = append(order, e.Node)
		}
		pod := e.ID
		if e.PodName != "" {
			pod = e.PodNamespace + "/" + e.PodName
		}
		byNode[e.Node][pod] = append(byNode[e.Node][pod], e)
	}
	for _, n := range order {
		gn := GraphNode{Name: n, Agent: agent[n]}
		var pods []string
		for p := range byNode[n] {
			pods = append(pods, p)
		}
		sort.Strings(pods)
		for _, p := range pods {
			atts := byNode[n][p]
			sort.Slice(atts, func(i, j int) bool { return atts[i].Interface < atts[j].Interface })
			gn.Pods = append(gn.Pods, GraphPod{Name: p, Attachments: atts})
		}
		g.Nodes = append(g.Nodes, gn)
	}
	return g
}

// vpcColor is a stable colour per VPC name.
func vpcColor(name string) string {
	palette := []string{"#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2"}
	h := fnv.New32a()
	h.Write([]byte(name))
	return palette[h.Sum32()%uint32(len(palette))]
}

// dotQuote quotes s as a DOT string; a newline becomes DOT's \n.
func dotQuote(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`).Replace(s) + `"`
}

// WriteDOT writes the graph in Graphviz DOT: a cluster per node holding
// its pods, a box per VPC, an edge per attachment.
func (g *Graph) WriteDOT(w io.Writer) error {
	var b strings.Builder
	b.WriteString("digraph genie {\n  rankdir=LR;\n  node [fontname=\"Helvetica\", fontsize=10];\n")
	for i, n := range g.Nodes {
		label := n.Name
		if n.Agent != "" {
			label += "\nagent: " + n.Agent
		}
		fmt.Fprintf(&b, "  subgraph cluster_%d {\n    label=%s;\n    style=rounded;\n", i, dotQuote(label))
		if len(n.Pods) == 0 {
			fmt.Fprintf(&b, "    %s [label=\"(no VPC pods)\", shape=plaintext];\n", dotQuote("node/"+n.Name+"/empty"))
		}
		for _, p := range n.Pods {
			fmt.Fprintf(&b, "    %s [label=%s, shape=box, style=rounded];\n", dotQuote("pod/"+n.Name+"/"+p.Name), dotQuote(p.Name))
		}
		b.WriteString("  }\n")
	}
	for _, v := range g.VPCs {
		fmt.Fprintf(&b, "  %s [label=%s, shape=box3d, color=%s, fontcolor=%s];\n", dotQuote("vpc/"+v.Name),
			dotQuote(fmt.Sprintf("VPC %s\nVNI %d  %s", v.Name, v.VNI, v.CIDR)), dotQuote(vpcColor(v.Name)), dotQuote(vpcColor(v.Name)))
	}
	for _, n := range g.Nodes {
		for _, p := range n.Pods {
			for _, a := range p.Attachments {
				fmt.Fprintf(&b, "  %s -> %s [label=%s, color=%s];\n", dotQuote("pod/"+n.Name+"/"+p.Name), dotQuote("vpc/"+a.VPC),
					dotQuote(fmt.Sprintf("%s %s/%s %s", a.Interface, a.VPC, a.Subnet, a.IP)), dotQuote(vpcColor(a.VPC)))
			}
		}
	}
	b.WriteString("}\n")
	_, err := io.WriteString(w, b.String())
	return err
}

// SVG layout constants (pixels).
const (
	svgPodW, svgPodH = 190, 34
	svgGap           = 14
	svgNodeW         = svgPodW + 2*svgGap
	svgTop           = 20
	svgVPCW, svgVPCH = 200, 46
)

// WriteSVG draws the graph without Graphviz: nodes as columns of pods,
// VPCs in a row below, a coloured line per attachment.
func (g *Graph) WriteSVG(w io.Writer) error {
	maxPods := 1
	for _, n := range g.Nodes {
		maxPods = max(maxPods, len(n.Pods))
	}
	nodeH := 40 + maxPods*(svgPodH+svgGap)
	cols := max(len(g.Nodes), 1)
	width := max(cols*(svgNodeW+svgGap)+svgGap, len(g.VPCs)*(svgVPCW+svgGap)+svgGap)
	vpcY := svgTop + nodeH + 90
	height := vpcY + svgVPCH + svgTop
	esc := html.EscapeString
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="Helvetica,Arial,sans-serif" font-size="11">`+"\n", width, height)
	vpcX := map[string]int{}
	for i, v := range g.VPCs {
		vpcX[v.Name] = svgGap + i*(svgVPCW+svgGap) + svgVPCW/2
	}
	type pt struct{ x, y int }
	podPos := map[string]pt{}
	for i, n := range g.Nodes {
		x := svgGap + i*(svgNodeW+svgGap)
		fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%d" height="%d" rx="8" fill="#f4f4f4" stroke="#888"/>`+"\n", x, svgTop, svgNodeW, nodeH)
		label := n.Name
		if n.Agent != "" {
			label += " (agent " + n.Agent + ")"
		}
		fmt.Fprintf(&b, `<text x="%d" y="%d" font-weight="bold">%s</text>`+"\n", x+svgGap, svgTop+22, esc(label))
		for j, p := range n.Pods {
			py := svgTop + 36 + j*(svgPodH+svgGap)
			fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%d" height="%d" rx="5" fill="#fff" stroke="#444"/>`+"\n", x+svgGap, py, svgPodW, svgPodH)
			fmt.Fprintf(&b, `<text x="%d" y="%d">%s</text>`+"\n", x+svgGap+6, py+14, esc(p.Name))
			var ips []string
			for _, a := range p.Attachments {
				ips = append(ips, a.Interface+" "+a.IP.String())
			}
			fmt.Fprintf(&b, `<text x="%d" y="%d" fill="#555" font-size="9">%s</text>`+"\n", x+svgGap+6, py+27, esc(strings.Join(ips, ", ")))
			podPos[n.Name+"/"+p.Name] = pt{x + svgGap + svgPodW/2, py + svgPodH}
		}
	}
	for _, n := range g.Nodes {
		for _, p := range n.Pods {
			from := podPos[n.Name+"/"+p.Name]
			for _, a := range p.Attachments {
				x, ok := vpcX[a.VPC]
				if !ok {
					continue
				}
				fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s" stroke-width="1.5"><title>%s</title></line>`+"\n",
					from.x, from.y, x, vpcY, vpcColor(a.VPC), esc(fmt.Sprintf("%s %s %s/%s %s", p.Name, a.Interface, a.VPC, a.Subnet, a.IP)))
			}
		}
	}
	for _, v := range g.VPCs {
		x := vpcX[v.Name] - svgVPCW/2
		c := vpcColor(v.Name)
		fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%d" height="%d" rx="6" fill="#fff" stroke="%s" stroke-width="2"/>`+"\n", x, vpcY, svgVPCW, svgVPCH, c)
		fmt.Fprintf(&b, `<text x="%d" y="%d" fill="%s" font-weight="bold">VPC %s</text>`+"\n", x+8, vpcY+18, c, esc(v.Name))
		fmt.Fprintf(&b, `<text x="%d" y="%d" fill="#555">VNI %d  %s  %d endpoints</text>`+"\n", x+8, vpcY+34, v.VNI, esc(v.CIDR.String()), v.Endpoints)
	}
	b.WriteString("</svg>\n")
	_, err := io.WriteString(w, b.String())
	return err
}
