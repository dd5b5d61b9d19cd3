package sandbox

import (
	"net/netip"
	"strings"
	"testing"
)

func TestGenieNetworks(t *testing.T) {
	for _, tc := range []struct {
		in   []string
		want string
		err  string
	}{
		{in: []string{"blue/web"}, want: "vpc:blue/web"},
		{in: []string{"blue/web@eth0", " red/web@eth1 "}, want: "vpc:blue/web@eth0,vpc:red/web@eth1"},
		{in: []string{"vpc:blue/web", "bridge-net@net5"}, want: "vpc:blue/web,bridge-net@net5"},
		{in: nil, err: "no network"},
		{in: []string{""}, err: "empty network"},
		{in: []string{"blue/web,red/web"}, err: "not allowed"},
		{in: []string{"blue/web;x=y"}, err: "not allowed"},
	} {
		got, err := GenieNetworks(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("GenieNetworks(%q) = %q, %v; want error containing %q", tc.in, got, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("GenieNetworks(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

func FuzzGenieNetworks(f *testing.F) {
	for _, s := range []string{"blue/web", "blue/web@eth1", "vpc:a/b", "x", "", "a/b/c", "a,b", "ü/ß@\x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		out, err := GenieNetworks([]string{s})
		if err != nil {
			return
		}
		// The result is one CNI_ARGS value: never a separator of the
		// CNI_ARGS syntax or a second element.
		if strings.ContainsAny(out, ";=,") {
			t.Fatalf("GenieNetworks(%q) = %q leaks a separator", s, out)
		}
	})
}

func TestValidateName(t *testing.T) {
	for _, ok := range []string{"a", "genie", "e2e0a1b2c", "my-sandbox", "a1234567890123456789"} {
		if err := ValidateName("sandbox", ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "-a", "a-", "A", "a.b", "a/b", "a_b", "a12345678901234567890", "../x"} {
		if err := ValidateName("sandbox", bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestNamesStayApart(t *testing.T) {
	// A sandbox's namespace prefix never matches another sandbox's
	// namespaces, even when one name is a prefix of the other.
	if strings.HasPrefix(podNetnsName("a-b", "x"), nsPrefix("a")) {
		t.Fatal("sandbox a would claim the namespaces of sandbox a-b")
	}
	if got := nthAddr(UnderlayPrefix, 11); got != netip.MustParseAddr("172.30.0.11") {
		t.Fatalf("nthAddr = %s", got)
	}
}

func TestPodIP(t *testing.T) {
	p := &Pod{Interfaces: []*PodInterface{
		{Name: "eth0", IPs: []netip.Prefix{netip.MustParsePrefix("fd00::2/64"), netip.MustParsePrefix("10.0.0.2/24")}},
		{Name: "eth1", IPs: []netip.Prefix{netip.MustParsePrefix("10.1.0.2/24")}},
	}}
	if ip, ok := p.IP(""); !ok || ip != netip.MustParseAddr("10.0.0.2") {
		t.Errorf("IP(\"\") = %s %v", ip, ok)
	}
	if ip, ok := p.IP("eth1"); !ok || ip != netip.MustParseAddr("10.1.0.2") {
		t.Errorf("IP(eth1) = %s %v", ip, ok)
	}
	if _, ok := p.IP("eth2"); ok {
		t.Error("IP(eth2) found an address")
	}
}
