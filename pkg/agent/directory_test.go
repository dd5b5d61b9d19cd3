package agent

import (
	"flag"
	"strings"
	"testing"
)

// The directory's flags: parsed, defaulted, and refused with a message
// naming the setting.
func TestDirectoryConfig(t *testing.T) {
	c := DefaultConfig()
	if c.EndpointMode != ModeVPCSync || c.directoryMode() {
		t.Fatalf("default endpoint mode %q", c.EndpointMode)
	}
	fs := flag.NewFlagSet("genied", flag.ContinueOnError)
	c.RegisterFlags(fs)
	if err := fs.Parse([]string{"--endpoint-mode", "directory", "--directory-shards", "8192", "--directory-replicas", "5"}); err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil || !c.directoryMode() || c.DirectoryShards != 8192 || c.DirectoryReplicas != 5 {
		t.Fatalf("parsed %+v: %v", c, err)
	}
	for _, tc := range []struct {
		edit func(*Config)
		want string
	}{
		{func(c *Config) { c.EndpointMode = "dht" }, `endpoint mode "dht"`},
		{func(c *Config) { c.DirectoryShards = 1000 }, "power of two"},
		{func(c *Config) { c.DirectoryReplicas = 8 }, "at most 7"},
		{func(c *Config) { c.DirectoryGossipPort = c.DirectoryRPCPort }, "both 4790"},
		{func(c *Config) { c.DirectoryRPCPort = 70000 }, "port 70000"},
		{func(c *Config) { c.GatewayMAC = "06:67:00:00:00:01" }, "bounce mark"},
	} {
		bad := c
		tc.edit(&bad)
		if err := bad.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("config %+v: err %v, want %q", bad, err, tc.want)
		}
	}
	// vpc-sync ignores the directory settings.
	c.EndpointMode, c.DirectoryShards = ModeVPCSync, 3
	if err := c.Validate(); err != nil {
		t.Errorf("vpc-sync with odd directory settings: %v", err)
	}
}
