package datapath

import (
	"net/netip"
	"os"
	"regexp"
	"strconv"
	"testing"
)

// TestDropReasonsMatchHeader keeps drops.go in sync with bpf/lib/drop.h: the
// same names with the same codes, nothing missing on either side.
func TestDropReasonsMatchHeader(t *testing.T) {
	src, err := os.ReadFile("../../bpf/lib/drop.h")
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile(`(?m)^#define DROP_([A-Z0-9_]+)\s+-(\d+)\b`)
	seen := map[DropReason]bool{}
	for _, m := range re.FindAllStringSubmatch(string(src), -1) {
		code, _ := strconv.Atoi(m[2])
		r := DropReason(code)
		if r.String() != m[1] {
			t.Errorf("drop.h DROP_%s = -%d, but Go names %d %q", m[1], code, code, r.String())
		}
		seen[r] = true
	}
	for _, r := range DropReasons() {
		if !seen[r] {
			t.Errorf("Go reason %d %s is not defined in drop.h", uint32(r), r)
		}
	}
	if len(seen) == 0 {
		t.Fatal("no DROP_* codes found in drop.h")
	}

	maps, err := os.ReadFile("../../bpf/lib/maps.h")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`#define DROP_MAX (\d+)`).FindSubmatch(maps)
	if m == nil || string(m[1]) != strconv.Itoa(maxDropReason) {
		t.Errorf("DROP_MAX in maps.h is %q, Go maxDropReason is %d", m, maxDropReason)
	}
	for _, r := range DropReasons() {
		if r >= maxDropReason {
			t.Errorf("reason %s (%d) does not fit the counter array of %d", r, uint32(r), maxDropReason)
		}
	}
	if got := DropReason(99).String(); got != "REASON_99" {
		t.Errorf("unknown reason string %q", got)
	}
}

func TestConfigValidate(t *testing.T) {
	good := testConfig("/sys/fs/bpf/x")
	if err := good.validate(); err != nil {
		t.Fatalf("valid config refused: %v", err)
	}
	for name, mut := range map[string]func(*Config){
		"no pin dir":     func(c *Config) { c.PinDir = "" },
		"ipv6 underlay":  func(c *Config) { c.UnderlayIP = netip.MustParseAddr("fd00::1") },
		"no ifindex":     func(c *Config) { c.UplinkIfindex = 0 },
		"short mac":      func(c *Config) { c.UplinkMAC = c.UplinkMAC[:5] },
		"no gateway mac": func(c *Config) { c.GatewayMAC = nil },
	} {
		c := testConfig("/sys/fs/bpf/x")
		mut(&c)
		if err := c.validate(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
