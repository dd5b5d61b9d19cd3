package e2e

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/cni-genie/cni-genie/pkg/sandbox"
	"github.com/cni-genie/cni-genie/pkg/sandbox/sandboxtest"
	"github.com/cni-genie/cni-genie/pkg/testutil/testenv"
)

// TestPrivilegedDemo runs the README's demo (make demo) end to end: it
// must find zero mismatches in its matrix and leave nothing behind.
func TestPrivilegedDemo(t *testing.T) {
	sandboxtest.RequirePrivileged(t)
	name := "demo" + testenv.RandSuffix()
	var out bytes.Buffer
	err := sandbox.Demo(context.Background(), sandbox.Options{Name: name, BinDir: sandboxtest.BinDir()}, &out, false)
	t.Log("\n" + out.String())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), " 0 mismatches") {
		t.Error("demo did not report 0 mismatches")
	}
	if left := sandbox.Leftovers("", "", name); len(left) > 0 {
		t.Errorf("demo left %v", left)
	}
}
