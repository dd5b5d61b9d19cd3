package sandboxtest_test

import (
	"testing"

	"github.com/cni-genie/cni-genie/pkg/sandbox"
	"github.com/cni-genie/cni-genie/pkg/sandbox/sandboxtest"
)

func TestTailLines(t *testing.T) {
	for _, tc := range []struct {
		in   string
		n    int
		want string
	}{
		{"a\nb\nc\n", 2, "b\nc"},
		{"a\nb\nc", 5, "a\nb\nc"},
		{"", 3, ""},
	} {
		if got := sandboxtest.TailLines(tc.in, tc.n); got != tc.want {
			t.Errorf("TailLines(%q, %d) = %q, want %q", tc.in, tc.n, got, tc.want)
		}
	}
}

// The binaries are built only for runs that can use them, and a sandbox
// comes up from them and goes down leaving nothing (checked by New).
func TestPrivilegedNew(t *testing.T) {
	sb := sandboxtest.New(t, "sbt", sandbox.Options{Nodes: 1})
	if len(sb.Nodes()) != 1 {
		t.Fatalf("nodes = %d, want 1", len(sb.Nodes()))
	}
	if sandboxtest.BinDir() == "" {
		t.Fatal("no bin dir after a successful New")
	}
}

func TestMain(m *testing.M) { sandboxtest.Main(m) }
