package selection

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

func TestParseCommaForm(t *testing.T) {
	got, err := ParseNetworks(" net-a, other-ns/net-c@eth5 ,vpc:blue/web@eth2")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 {
		t.Fatalf("got %d elements", len(got))
	}
	if got[0].Name != "net-a" || got[0].Namespace != "" || got[0].InterfaceRequest != "" {
		t.Errorf("element 1: %+v", got[0])
	}
	if got[1].Name != "net-c" || got[1].Namespace != "other-ns" || got[1].InterfaceRequest != "eth5" {
		t.Errorf("element 2: %+v", got[1])
	}
	if !got[2].IsVPC() || got[2].VPC != "blue" || got[2].Subnet != "web" || got[2].InterfaceRequest != "eth2" {
		t.Errorf("element 3: %+v", got[2])
	}
	if s := FormatCommaForm(got); s != "net-a,other-ns/net-c@eth5,vpc:blue/web@eth2" {
		t.Errorf("format: %q", s)
	}
}

func TestParseClassicRepeats(t *testing.T) {
	got, err := ParseClassic("bridge,macvlan@eth3,bridge")
	if err != nil {
		t.Fatal(err)
	}
	if FormatCommaForm(got) != "bridge,macvlan@eth3,bridge" {
		t.Fatalf("got %q", FormatCommaForm(got))
	}
	if _, err := ParseClassic("ns/bridge"); !errors.Is(err, ErrInvalid) {
		t.Fatalf("namespace in classic form: %v", err)
	}
}

func TestParseNetworksJSON(t *testing.T) {
	in := `[{"name":"net-a","namespace":"ns1","interface":"eth7","ips":["10.1.1.5/24","fd00::5"],
	  "mac":"02:00:00:00:00:05","cni-args":{"x":"y"},"default-route":["10.1.1.1"],
	  "bandwidth":{"ingressRate":1000,"ingressBurst":100,"egressRate":2000,"egressBurst":200}},
	  {"name":"vpc:blue/web"}]`
	got, err := ParseNetworks(in)
	if err != nil {
		t.Fatal(err)
	}
	a := got[0]
	if a.Name != "net-a" || a.Namespace != "ns1" || a.InterfaceRequest != "eth7" || len(a.IPRequest) != 2 ||
		a.MacRequest != "02:00:00:00:00:05" || (*a.CNIArgs)["x"] != "y" || a.GatewayRequest[0].String() != "10.1.1.1" ||
		a.BandwidthRequest.EgressBurst != 200 {
		t.Errorf("element 1: %+v", a)
	}
	if !got[1].IsVPC() {
		t.Errorf("element 2 not vpc: %+v", got[1])
	}
}

func TestParseErrors(t *testing.T) {
	for _, in := range []string{
		`[{"name":"a"`,                    // malformed JSON
		`[{"name":"a","interfaces":"x"}]`, // unknown field
		`[{"name":""}]`,
		`[{"name":"a","ips":["nope"]}]`,
		`[{"name":"a","mac":"zz"}]`,
		`[{"name":"a","interface":"a/b"}]`,
		`{"name":"a"}`,
		`a,,b`,
		`a@`,
		`/a`,
		`Bad_NS/a`,
		`vpc:blue`,
		`vpc:Blue/web`,
		`a@waytoolonginterfacename`,
		`a b`,
	} {
		if _, err := ParseNetworks(in); !errors.Is(err, ErrInvalid) {
			t.Errorf("%q: want ErrInvalid, got %v", in, err)
		}
	}
}

func TestPlan(t *testing.T) {
	elems, _ := ParseClassic("bridge,macvlan@net1,bridge,ptp")
	p, err := Plan("eth0", elems)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, a := range p {
		names = append(names, a.IfName)
	}
	if strings.Join(names, ",") != "eth0,net1,net2,net3" || !p[0].Default {
		t.Fatalf("plan: %v (default %v)", names, p[0].Default)
	}

	elems, _ = ParseNetworks(`[{"name":"a"},{"name":"b","default-route":["10.0.0.1"]}]`)
	p, err = Plan("eth0", elems)
	if err != nil || p[0].Default || !p[1].Default {
		t.Fatalf("default-route owner: %v %+v", err, p)
	}

	for _, tc := range []struct{ sel, why string }{
		{`a@eth1,b@eth1`, "duplicate interface"},
		{`a,b@eth0`, "duplicate with CNI_IFNAME"},
		{`[{"name":"a","default-route":["10.0.0.1"]},{"name":"b","default-route":["10.1.0.1"]}]`, "two default routes"},
		{``, "empty"},
	} {
		elems, err := ParseNetworks(tc.sel)
		if err != nil {
			t.Fatalf("%s: parse: %v", tc.why, err)
		}
		if _, err := Plan("eth0", elems); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: want ErrInvalid, got %v", tc.why, err)
		}
	}
}

// checkPlan asserts the planner's invariants on any parsed selection.
func checkPlan(t *testing.T, elems []Element) {
	p, err := Plan("eth0", elems)
	if err != nil {
		if !errors.Is(err, ErrInvalid) {
			t.Fatalf("plan error does not wrap ErrInvalid: %v", err)
		}
		return
	}
	seen := map[string]bool{}
	defaults := 0
	for _, a := range p {
		if a.IfName == "" || seen[a.IfName] {
			t.Fatalf("ifname %q empty or duplicate in %+v", a.IfName, p)
		}
		seen[a.IfName] = true
		if a.Default {
			defaults++
		}
	}
	if defaults != 1 {
		t.Fatalf("%d defaults in plan", defaults)
	}
}

func FuzzParseNetworksCommaForm(f *testing.F) {
	for _, s := range []string{"net-a,other-ns/net-c@eth5", "vpc:blue/web@eth1,a", "a@eth0,b", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		elems, err := ParseCommaForm(s, true)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error does not wrap ErrInvalid: %v", err)
			}
			return
		}
		again, err := ParseCommaForm(FormatCommaForm(elems), true)
		if err != nil || !Equal(elems, again) {
			t.Fatalf("round trip of %q: %v (%q)", s, err, FormatCommaForm(elems))
		}
		if len(elems) > 0 {
			checkPlan(t, elems)
		}
	})
}

func FuzzParseClassic(f *testing.F) {
	for _, s := range []string{"bridge,macvlan@eth3,bridge", "vpc:red/db", "x@net1,y,z"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		elems, err := ParseClassic(s)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error does not wrap ErrInvalid: %v", err)
			}
			return
		}
		for _, e := range elems {
			if e.Namespace != "" {
				t.Fatalf("classic form produced a namespace: %+v", e)
			}
		}
		again, err := ParseClassic(FormatCommaForm(elems))
		if err != nil || !Equal(elems, again) {
			t.Fatalf("round trip of %q: %v", s, err)
		}
		if len(elems) > 0 {
			checkPlan(t, elems)
		}
	})
}

func FuzzParseNetworksJSON(f *testing.F) {
	for _, s := range []string{
		`[{"name":"a","interface":"eth1","ips":["10.0.0.2/24"],"mac":"02:00:00:00:00:01","default-route":["10.0.0.1"]}]`,
		`[{"name":"vpc:blue/web"},{"name":"b","namespace":"x","cni-args":{"k":1},"bandwidth":{"ingressRate":1}}]`,
		`[]`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		elems, err := ParseNetworksJSON(s)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error does not wrap ErrInvalid: %v", err)
			}
			return
		}
		raw := make([]any, len(elems))
		for i := range elems {
			raw[i] = elems[i].NetworkSelectionElement
		}
		data, err := json.Marshal(raw)
		if err != nil {
			t.Fatalf("re-encoding: %v", err)
		}
		again, err := ParseNetworksJSON(string(data))
		if err != nil || !Equal(elems, again) {
			t.Fatalf("round trip of %q via %s: %v", s, data, err)
		}
		if len(elems) > 0 {
			checkPlan(t, elems)
		}
	})
}
