// Package integration drives the built genie binary through the real
// cnitool, with the real reference plugins as delegates, exactly as a
// container runtime would: CNI env, the conflist on stdin, the result on
// stdout. It also holds the ADD+DEL overhead benchmark.
package integration

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/cni-genie/cni-genie/pkg/testutil/testenv"
)

type cniResult struct {
	CNIVersion string `json:"cniVersion"`
	Interfaces []struct {
		Name    string `json:"name"`
		Sandbox string `json:"sandbox"`
	} `json:"interfaces"`
	IPs []struct {
		Interface *int   `json:"interface"`
		Address   string `json:"address"`
	} `json:"ips"`
}

type cniError struct {
	Code uint   `json:"code"`
	Msg  string `json:"msg"`
}

// TestPrivilegedCnitool: add, check, del (and gc/status at 1.1.0) through
// cnitool -> genie -> bridge/macvlan/host-local, under every spec version.
func TestPrivilegedCnitool(t *testing.T) {
	for _, v := range specVersions {
		t.Run("cni-"+v, func(t *testing.T) {
			n := newNode(t, v, nil)
			pod := testenv.NewNS(t)
			args := "IgnoreUnknown=1;GENIE_NETWORKS=br-a,mv@eth3,br-b"

			out, err := n.run("add", "genie-net", pod, args)
			if err != nil {
				t.Fatalf("cnitool add: %v\n%s", err, out)
			}
			var res cniResult
			if err := json.Unmarshal(out, &res); err != nil {
				t.Fatalf("decoding result: %v\n%s", err, out)
			}
			if res.CNIVersion != v {
				t.Fatalf("result version %q, want %q", res.CNIVersion, v)
			}
			got := map[string]string{}
			for _, ip := range res.IPs {
				if ip.Interface == nil || *ip.Interface >= len(res.Interfaces) {
					t.Fatalf("ip %s has no valid interface index: %s", ip.Address, out)
				}
				got[res.Interfaces[*ip.Interface].Name] = ip.Address
			}
			links := podLinks(t, pod)
			for ifname, prefix := range map[string]string{"eth0": "10.10.0.", "eth3": "10.20.0.", "net1": "10.30.0."} {
				if !strings.HasPrefix(got[ifname], prefix) || len(links[ifname]) != 1 || links[ifname][0] != got[ifname] {
					t.Errorf("%s: result %q, pod %v", ifname, got[ifname], links[ifname])
				}
			}

			out, err = n.run("check", "genie-net", pod, args)
			if v == "0.3.1" {
				if err == nil {
					t.Fatalf("check under 0.3.1 must be refused")
				}
			} else if err != nil {
				t.Fatalf("cnitool check: %v\n%s", err, out)
			}

			if v == "1.1.0" {
				if out, err := n.run("status", "genie-net", pod, ""); err != nil {
					t.Fatalf("cnitool status: %v\n%s", err, out)
				}
			}

			if out, err := n.run("del", "genie-net", pod, ""); err != nil {
				t.Fatalf("cnitool del: %v\n%s", err, out)
			}
			if l := podLinks(t, pod); len(l) != 0 {
				t.Fatalf("interfaces after del: %v", l)
			}
			if a := n.allocations(); len(a) != 0 {
				t.Fatalf("allocations after del: %v", a)
			}

			if v == "1.1.0" {
				// cnitool gc passes no valid attachments: everything goes.
				if out, err := n.run("add", "genie-net", pod, args); err != nil {
					t.Fatalf("second add: %v\n%s", err, out)
				}
				if out, err := n.run("gc", "genie-net", pod, ""); err != nil {
					t.Fatalf("cnitool gc: %v\n%s", err, out)
				}
				if a := n.allocations(); len(a) != 0 {
					t.Fatalf("allocations after gc: %v", a)
				}
				if l := podLinks(t, pod); len(l) != 0 {
					t.Fatalf("interfaces after gc: %v", l)
				}
			}
		})
	}
}

// TestPrivilegedCnitoolErrors: bad input reaches the runtime as a CNI error
// (non-zero exit, code and message naming the network) and leaves nothing.
func TestPrivilegedCnitoolErrors(t *testing.T) {
	n := newNode(t, "1.1.0", nil)
	n.write("40-missing.conf", map[string]any{"cniVersion": "1.1.0", "name": "missing", "type": "genie-no-such-plugin"})
	pod := testenv.NewNS(t)
	for _, tc := range []struct {
		args, want string
		code       uint
	}{
		{"IgnoreUnknown=1;GENIE_NETWORKS=br-a,nope", `"nope"`, 7},
		{"IgnoreUnknown=1;GENIE_NETWORKS=br-a,mv,missing", "missing plugin binary", 7},
		{"IgnoreUnknown=1;GENIE_NETWORKS=br-a,mv@eth0", `interface "eth0"`, 7},
	} {
		out, err := n.run("add", "genie-net", pod, tc.args)
		if err == nil {
			t.Fatalf("%s: add succeeded: %s", tc.args, out)
		}
		s := string(out)
		if !strings.Contains(s, tc.want) {
			t.Errorf("%s: output %q does not mention %q", tc.args, s, tc.want)
		}
		t.Logf("%s -> %s", tc.args, strings.TrimSpace(s))
		if l := podLinks(t, pod); len(l) != 0 {
			t.Fatalf("%s: interfaces left: %v", tc.args, l)
		}
		if a := n.allocations(); len(a) != 0 {
			t.Fatalf("%s: allocations left: %v", tc.args, a)
		}
		// cnitool shows only the message; the runtime also sees the code:
		// run the binary as the runtime does and read its stdout.
		ce, exit := n.execGenie("ADD", pod, tc.args)
		if exit == 0 || ce.Code != tc.code || !strings.Contains(ce.Msg, tc.want) {
			t.Errorf("%s: exit %d, error %+v; want non-zero exit and code %d", tc.args, exit, ce, tc.code)
		}
	}
}

// execGenie runs the genie binary directly with CNI env and genie's config
// on stdin (as extracted from its conflist), returning the error it prints.
func (n *node) execGenie(verb string, pod ns.NetNS, cniArgs string) (cniError, int) {
	list, err := os.ReadFile(filepath.Join(n.confDir, "00-genie.conflist"))
	if err != nil {
		n.t.Fatal(err)
	}
	var l struct {
		CNIVersion string           `json:"cniVersion"`
		Name       string           `json:"name"`
		Plugins    []map[string]any `json:"plugins"`
	}
	json.Unmarshal(list, &l)
	conf := l.Plugins[0]
	conf["cniVersion"], conf["name"] = l.CNIVersion, l.Name
	stdin, _ := json.Marshal(conf)
	var ce cniError
	exit := 0
	cmd := exec.Command(filepath.Join(genieBinary(n.t), "genie"))
	cmd.Env = append(os.Environ(), "CNI_COMMAND="+verb, "CNI_CONTAINERID=direct-"+n.sfx, "CNI_NETNS="+pod.Path(),
		"CNI_IFNAME=eth0", "CNI_PATH="+n.cniPath, "CNI_ARGS="+cniArgs)
	cmd.Stdin = strings.NewReader(string(stdin))
	out, err := cmd.Output()
	if ee, ok := err.(*exec.ExitError); ok {
		exit = ee.ExitCode()
	}
	if jerr := json.Unmarshal(out, &ce); jerr != nil {
		n.t.Fatalf("genie stdout is not a CNI error: %q", out)
	}
	return ce, exit
}
