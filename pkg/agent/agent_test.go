package agent

import (
	"errors"
	"flag"
	"io"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestHostVethName(t *testing.T) {
	seen := map[string]bool{}
	for _, c := range []struct{ id, ifName string }{
		{"c1", "eth1"}, {"c1", "eth2"}, {"c2", "eth1"},
		{strings.Repeat("f", 64), "net1"}, {"", ""},
	} {
		n := hostVethName(c.id, c.ifName)
		if len(n) > 15 || !strings.HasPrefix(n, "gv") || len(n) != 12 {
			t.Errorf("hostVethName(%q, %q) = %q: want gv + 10 hex", c.id, c.ifName, n)
		}
		if n != hostVethName(c.id, c.ifName) {
			t.Errorf("hostVethName(%q, %q) is not deterministic", c.id, c.ifName)
		}
		if seen[n] {
			t.Errorf("hostVethName(%q, %q) = %q collides", c.id, c.ifName, n)
		}
		seen[n] = true
	}
}

func TestPodMAC(t *testing.T) {
	a, b := podMAC("c1", "eth1"), podMAC("c1", "eth2")
	if a.String() == b.String() {
		t.Fatalf("two interfaces got the same MAC %s", a)
	}
	if a[0]&0x02 == 0 || a[0]&0x01 != 0 {
		t.Fatalf("MAC %s is not locally administered unicast", a)
	}
	if _, err := parseMAC(a.String()); err != nil {
		t.Fatal(err)
	}
	if a.String() != podMAC("c1", "eth1").String() {
		t.Fatal("podMAC is not deterministic")
	}
}

func TestParseMAC(t *testing.T) {
	for in, ok := range map[string]bool{
		"02:00:00:00:00:01":       true,
		"01:00:5e:00:00:01":       false, // multicast
		"02:00:00:00:00":          false,
		"not-a-mac":               false,
		"02:00:00:00:00:00:00:01": false, // EUI-64
	} {
		if _, err := parseMAC(in); (err == nil) != ok {
			t.Errorf("parseMAC(%q) error %v, want ok=%v", in, err, ok)
		}
	}
}

func TestParseRequestedIP(t *testing.T) {
	for _, c := range []struct {
		in   string
		ip   string
		bits int
		ok   bool
	}{
		{"10.1.0.5", "10.1.0.5", 0, true},
		{"10.1.0.5/24", "10.1.0.5", 24, true},
		{"fd00::1", "", 0, false},
		{"fd00::1/64", "", 0, false},
		{"10.1.0.300", "", 0, false},
		{"", "", 0, false},
	} {
		ip, bits, err := parseRequestedIP(c.in)
		if (err == nil) != c.ok {
			t.Errorf("parseRequestedIP(%q): error %v, want ok=%v", c.in, err, c.ok)
			continue
		}
		if c.ok && (ip != netip.MustParseAddr(c.ip) || bits != c.bits) {
			t.Errorf("parseRequestedIP(%q) = %s /%d", c.in, ip, bits)
		}
	}
}

func TestConfigFlags(t *testing.T) {
	cfg := DefaultConfig()
	fs := flag.NewFlagSet("genied", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	cfg.RegisterFlags(fs)
	err := fs.Parse([]string{"--node-name", "n1", "--uplink", "ens3", "--pin-dir", "/sys/fs/bpf/x",
		"--socket", "/tmp/a.sock", "--store-endpoints", "unix:///run/e.sock, http://10.0.0.1:2379",
		"--state-dir", "/tmp/st", "--metrics-addr", "", "--xdp-prefilter"})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.NodeName != "n1" || cfg.Uplink != "ens3" || cfg.PinDir != "/sys/fs/bpf/x" || cfg.Socket != "/tmp/a.sock" ||
		len(cfg.StoreEndpoints) != 2 || cfg.StoreEndpoints[1] != "http://10.0.0.1:2379" || cfg.StateDir != "/tmp/st" ||
		cfg.MetricsAddr != "" || !cfg.XDPPrefilter {
		t.Fatalf("flags not applied: %+v", cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	bad := cfg
	bad.GatewayMAC = "01:00:00:00:00:01"
	if err := bad.Validate(); err == nil || !strings.Contains(err.Error(), "gateway mac") {
		t.Fatalf("multicast gateway MAC accepted: %v", err)
	}
	bad = cfg
	bad.NodeName = ""
	if err := bad.Validate(); err == nil {
		t.Fatal("empty node name accepted")
	}
	if err := fs.Parse([]string{"--store-endpoints", " , "}); err == nil {
		t.Fatal("empty endpoint list accepted")
	}
}

func TestStateStore(t *testing.T) {
	s, err := newStateStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	at := &attachment{ContainerID: "c1", IfName: "eth1", VPC: "blue", Subnet: "web", VNI: 7,
		HostIf: hostVethName("c1", "eth1"), IP: netip.MustParseAddr("10.1.0.2"), Prefix: 24, MAC: "02:00:00:00:00:01"}
	if err := s.save(at); err != nil {
		t.Fatal(err)
	}
	at.Complete = true
	if err := s.save(at); err != nil {
		t.Fatal(err)
	}
	got, errs := s.load()
	if len(errs) != 0 || len(got) != 1 || *got[0] != *at {
		t.Fatalf("load = %+v, %v", got, errs)
	}
	if ep := got[0].endpoint("n1"); ep.ID != "c1/eth1" || ep.IP != at.IP || ep.MAC.String() != at.MAC || ep.Node != "n1" {
		t.Fatalf("endpoint %+v", ep)
	}
	if err := s.remove(at.key()); err != nil {
		t.Fatal(err)
	}
	if err := s.remove(at.key()); err != nil {
		t.Fatalf("second remove: %v", err)
	}
	if got, _ := s.load(); len(got) != 0 {
		t.Fatalf("record survived remove: %+v", got)
	}
}

func TestDropsCollector(t *testing.T) {
	m := newMetrics(func() (map[string]uint64, error) {
		return map[string]uint64{"NO_ROUTE": 3, "SPOOFED_IP": 0}, nil
	})
	mfs, err := m.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "genie_datapath_drops_total" {
			continue
		}
		for _, mm := range mf.GetMetric() {
			got[mm.GetLabel()[0].GetValue()] = mm.GetCounter().GetValue()
		}
	}
	if len(got) != 2 || got["NO_ROUTE"] != 3 || got["SPOOFED_IP"] != 0 {
		t.Fatalf("drop series %v", got)
	}
	failing := newMetrics(func() (map[string]uint64, error) { return nil, errors.New("map gone") })
	if _, err := failing.reg.Gather(); err == nil {
		t.Fatal("a failing drops read was not reported")
	}
}

// TestKeyedMutex: a held key makes a second locker of the same key wait
// (it is given ample time to get in), other keys do not wait, concurrent
// lockers of one key never overlap, and no entry is left behind. A mutex
// that does not lock fails the first check (the second locker gets in
// within the grace period) and the overlap count.
func TestKeyedMutex(t *testing.T) {
	var k keyedMutex
	unlockA := k.lock("a")
	done := make(chan struct{})
	go func() {
		defer close(done)
		k.lock("b")() // another key does not wait
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("lock of another key waited for a held key")
	}
	got := make(chan struct{})
	go func() {
		defer close(got)
		k.lock("a")()
	}()
	select {
	case <-got:
		t.Fatal("second lock of the same key did not wait")
	case <-time.After(100 * time.Millisecond):
	}
	unlockA()
	select {
	case <-got:
	case <-time.After(5 * time.Second):
		t.Fatal("second lock of the same key never got the key after unlock")
	}

	// Mutual exclusion under contention.
	var inside, overlaps atomic.Int32
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 50 {
				unlock := k.lock("c")
				if inside.Add(1) != 1 {
					overlaps.Add(1)
				}
				time.Sleep(50 * time.Microsecond)
				inside.Add(-1)
				unlock()
			}
		}()
	}
	wg.Wait()
	if n := overlaps.Load(); n != 0 {
		t.Fatalf("%d lockers of one key overlapped", n)
	}
	k.mu.Lock()
	left := len(k.m)
	k.mu.Unlock()
	if left != 0 {
		t.Fatalf("entries leaked: %v", k.m)
	}
}
