package vpc_test

import (
	"testing"

	"github.com/cni-genie/cni-genie/pkg/vpc"
)

// FuzzParseSubnet feeds arbitrary user input to the subnet parser and
// checks the invariants of anything it accepts.
func FuzzParseSubnet(f *testing.F) {
	f.Add("10.1.0.0/16", "web", "10.1.0.0/24", "", "")
	f.Add("10.1.0.0/16", "web", "10.1.0.0/24", "10.1.0.254", "/28")
	f.Add("0.0.0.0/0", "a", "10.0.0.0/30", "", "32")
	f.Add("10.0.0.0/8", "x", "10.1.0.5/24", "10.1.0.0", "99999999999999999999")
	f.Add("10.0.0.0/8", "x", "::/0", "::1", "")
	f.Fuzz(func(t *testing.T, vpcCIDR, name, cidr, gw, block string) {
		v, verr := vpc.ParseVPC("blue", vpcCIDR)
		s, err := vpc.ParseSubnet("blue", name, cidr, gw, block)
		if err != nil {
			return
		}
		// Accepted: a valid, masked IPv4 subnet with a usable gateway and
		// block size.
		if !s.CIDR.Addr().Is4() || s.CIDR.Masked() != s.CIDR || s.CIDR.Bits() > vpc.MaxSubnetPrefixLen {
			t.Fatalf("accepted bad cidr %s", s.CIDR)
		}
		if !s.CIDR.Contains(s.Gateway) || s.Gateway == s.CIDR.Addr() || s.Gateway == vpc.LastAddr(s.CIDR) {
			t.Fatalf("accepted bad gateway %s in %s", s.Gateway, s.CIDR)
		}
		if s.BlockPrefixLen < s.CIDR.Bits() || s.BlockPrefixLen > 32 {
			t.Fatalf("accepted bad block /%d in %s", s.BlockPrefixLen, s.CIDR)
		}
		if s.Assignable(s.Gateway) || s.Assignable(s.CIDR.Addr()) {
			t.Fatalf("reserved address assignable in %s", s)
		}
		if verr == nil {
			err := s.Validate(v)
			inside := v.CIDR.Bits() <= s.CIDR.Bits() && v.CIDR.Contains(s.CIDR.Addr())
			if (err == nil) != inside {
				t.Fatalf("validate %s in %s: %v (inside=%v)", s.CIDR, v.CIDR, err, inside)
			}
			// A subnet always overlaps itself under another name.
			o := s
			o.Name = s.Name + "-x"
			if vpc.CheckOverlap(s, []vpc.Subnet{o}) == nil {
				t.Fatalf("no overlap of %s with itself", s.CIDR)
			}
		}
	})
}
