package selection

import (
	"regexp"
	"testing"
)

// The regexps the hand-written name checks replace: they must agree on
// every input.
var (
	dnsLabelRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)
	netNameRE  = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$`)
)

var nameCases = []string{"", "a", "A", "0", "-", "a-", "-a", "a-b", "a--b", "ab9", "Ab", "a_b", "a.b", "_a", ".a",
	"net-a", "Net_1.x-", "a b", "é", "a\n", "vpc:blue", "ns/net", "a@b", "9-9"}

func TestNameMatchersAgreeWithRegexps(t *testing.T) {
	for _, s := range nameCases {
		checkNameMatchers(t, s)
	}
}

func FuzzNameMatchers(f *testing.F) {
	for _, s := range nameCases {
		f.Add(s)
	}
	f.Fuzz(checkNameMatchers)
}

func checkNameMatchers(t *testing.T, s string) {
	if got, want := dnsLabel.MatchString(s), dnsLabelRE.MatchString(s); got != want {
		t.Errorf("dnsLabel(%q) = %v, regexp says %v", s, got, want)
	}
	if got, want := netName.MatchString(s), netNameRE.MatchString(s); got != want {
		t.Errorf("netName(%q) = %v, regexp says %v", s, got, want)
	}
}
