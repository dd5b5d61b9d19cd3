package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"strings"
	"testing"

	"github.com/cni-genie/cni-genie/pkg/sandbox"
)

// TestPrivilegedDemo runs the README's demo (make demo) end to end: it
// must find zero mismatches in its matrix and leave nothing behind.
func TestPrivilegedDemo(t *testing.T) {
	requirePrivileged(t)
	b := make([]byte, 3)
	rand.Read(b)
	name := "demo" + hex.EncodeToString(b)
	var out bytes.Buffer
	err := sandbox.Demo(context.Background(), sandbox.Options{Name: name, BinDir: binDir}, &out, false)
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
