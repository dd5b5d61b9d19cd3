package e2e

import (
	"errors"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cni-genie/cni-genie/pkg/sandbox"
	"github.com/cni-genie/cni-genie/pkg/sandbox/sandboxtest"
	"github.com/cni-genie/cni-genie/pkg/testutil/testenv"
)

// TestPrivilegedCLI drives the sandbox through the geniectl binary, as a
// user would: up, vpc/subnet create, pod add, exec, status, pod del, down.
func TestPrivilegedCLI(t *testing.T) {
	sandboxtest.RequirePrivileged(t)
	name := "cli" + testenv.RandSuffix()
	geniectl := filepath.Join(sandboxtest.BinDir(), "geniectl")
	run := func(args ...string) (string, int) {
		t.Helper()
		out, err := exec.Command(geniectl, args...).CombinedOutput()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return string(out), ee.ExitCode()
		}
		if err != nil {
			t.Fatalf("geniectl %v: %v", args, err)
		}
		return string(out), 0
	}
	must := func(args ...string) string {
		t.Helper()
		out, code := run(args...)
		if code != 0 {
			t.Fatalf("geniectl %s: exit %d:\n%s", strings.Join(args, " "), code, out)
		}
		return out
	}
	t.Cleanup(func() {
		run("sandbox", "down", "--name", name)
		if left := sandbox.Leftovers("", "", name); len(left) > 0 {
			t.Errorf("left behind: %v", left)
		}
	})
	must("sandbox", "up", "--name", name, "--nodes", "2")
	if out := must("--sandbox", name, "vpc", "create", "blue", "--cidr", "10.10.0.0/16"); !strings.Contains(out, "blue") || !strings.Contains(out, "VNI") {
		t.Errorf("vpc create output:\n%s", out)
	}
	must("--sandbox", name, "subnet", "create", "blue/web", "--cidr", "10.10.1.0/24")
	if out, code := run("--sandbox", name, "subnet", "create", "blue/db", "--cidr", "10.10.1.128/25"); code == 0 || !strings.Contains(out, "overlaps") {
		t.Errorf("overlapping subnet: exit %d:\n%s", code, out)
	}
	if out, code := run("--sandbox", name, "vpc", "create", "bad", "--cidr", "nope"); code == 0 || !strings.Contains(out, "cidr") {
		t.Errorf("bad cidr: exit %d:\n%s", code, out)
	}
	if out := must("--sandbox", name, "subnet", "list"); !strings.Contains(out, "10.10.1.0/24") {
		t.Errorf("subnet list:\n%s", out)
	}
	must("sandbox", "pod", "add", "a", "--name", name, "--node", "1", "--net", "blue/web")
	out := must("sandbox", "pod", "add", "b", "--name", name, "--node", "node2", "--net", "blue/web@eth0")
	if !strings.Contains(out, "10.10.1.") {
		t.Errorf("pod add output has no address:\n%s", out)
	}
	if out, code := run("sandbox", "pod", "add", "c", "--name", name, "--node", "7", "--net", "blue/web"); code == 0 || !strings.Contains(out, "node 7") {
		t.Errorf("pod on a missing node: exit %d:\n%s", code, out)
	}
	if out, code := run("sandbox", "pod", "add", "c", "--name", name, "--net", "nosuch/web"); code == 0 || !strings.Contains(out, "nosuch") {
		t.Errorf("pod in a missing vpc: exit %d:\n%s", code, out)
	}
	if out := must("sandbox", "matrix", "--name", name); strings.Count(out, " reached ") != 6 || strings.Contains(out, "MISMATCH") {
		t.Errorf("matrix of two pods of one VPC:\n%s", out)
	}
	if out := must("sandbox", "exec", "--name", name, "a", "--", "ip", "-4", "addr", "show", "eth0"); !strings.Contains(out, "10.10.1.") {
		t.Errorf("exec output:\n%s", out)
	}
	if _, code := run("sandbox", "exec", "--name", name, "a", "--", "false"); code != 1 {
		t.Errorf("exec false: exit %d, want 1", code)
	}
	st := must("sandbox", "status", "--name", name)
	for _, want := range []string{"node1", "node2", "running", "a ", "b "} {
		if !strings.Contains(st, want) {
			t.Errorf("status lacks %q:\n%s", want, st)
		}
	}
	must("sandbox", "pod", "del", "a", "--name", name)
	if out, code := run("--sandbox", name, "subnet", "delete", "blue/web"); code == 0 || !strings.Contains(out, "in use") {
		t.Errorf("deleting a subnet with endpoints: exit %d:\n%s", code, out)
	}
	must("sandbox", "pod", "del", "b", "--name", name)
	must("--sandbox", name, "subnet", "delete", "blue/web")
	must("--sandbox", name, "vpc", "delete", "blue")
	must("sandbox", "down", "--name", name)
	if left := sandbox.Leftovers("", "", name); len(left) > 0 {
		t.Errorf("down left %v", left)
	}
	must("sandbox", "down", "--name", name)
	if out, code := run("sandbox", "status", "--name", name); code == 0 || !strings.Contains(out, "not up") {
		t.Errorf("status of a sandbox that is down: exit %d:\n%s", code, out)
	}
}
