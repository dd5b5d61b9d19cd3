package sandbox

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/cni-genie/cni-genie/pkg/datapath"
)

// Down tears the sandbox down: CNI DEL of every pod, agents and store
// stopped, namespaces deleted, pins removed, state dir removed. It also
// discovers leftovers by name (namespaces with the sandbox's prefix,
// processes whose command line points into its state dir, its bpffs dir),
// so it cleans up after a crash and is safe to run twice.
func (s *Sandbox) Down(ctx context.Context) error {
	var errs []error
	if _, err := os.Stat(s.dir); err == nil {
		unlock, err := s.lock()
		if err == nil {
			defer unlock()
		}
	}
	// Pods first, while the agents still run, so their IPs and endpoints
	// are released through the normal DEL path.
	for _, name := range sortedKeys(s.st.Pods) {
		p := s.st.Pods[name]
		if processAlive(agentPIDOf(s, p.Node)) || len(p.ConfList) > 0 {
			if err := s.podDelLocked(ctx, p); err != nil {
				fmt.Fprintf(s.log, "warning: %v\n", err)
			}
		}
		delete(s.st.Pods, name)
	}
	// Processes: the recorded ones, then anything else pointing into the
	// state dir (a crashed up, a lost state file).
	pids := []int{}
	for _, n := range s.st.Nodes {
		pids = append(pids, n.AgentPID)
	}
	pids = append(pids, findProcesses(s.dir)...)
	for _, pid := range pids {
		if err := s.stopProcess(pid, 10*time.Second); err != nil {
			errs = append(errs, err)
		}
	}
	// The store goes last: agents may flush to it on shutdown.
	for _, pid := range append([]int{s.st.StorePID}, findProcesses(s.dir)...) {
		if err := s.stopProcess(pid, 10*time.Second); err != nil {
			errs = append(errs, err)
		}
	}
	if err := deleteNamespaces(s.st.Name); err != nil {
		errs = append(errs, err)
	}
	if err := removePins(s.pinRoot); err != nil {
		errs = append(errs, err)
	}
	if err := os.RemoveAll(s.dir); err != nil {
		errs = append(errs, fmt.Errorf("sandbox %q: remove state dir: %w", s.st.Name, err))
	}
	return errors.Join(errs...)
}

func agentPIDOf(s *Sandbox, node string) int {
	for _, n := range s.st.Nodes {
		if n.Name == node {
			return n.AgentPID
		}
	}
	return 0
}

// deleteNamespaces deletes every namespace of the sandbox: pods first,
// then nodes, then the fabric (deleting a node drops its uplink veth, and
// with it the fabric's port).
func deleteNamespaces(name string) error {
	left, err := listNetns(nsPrefix(name))
	if err != nil {
		return err
	}
	var errs []error
	for _, pass := range []func(string) bool{
		func(n string) bool { return len(n) > len(nsPrefix(name))+4 && n[len(nsPrefix(name)):][:4] == "pod." },
		func(n string) bool { return n != nsPrefix(name)+"fabric" },
		func(string) bool { return true },
	} {
		for _, n := range left {
			if _, err := os.Stat(netnsPath(n)); err != nil || !pass(n) {
				continue
			}
			if err := deleteNetns(n); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// removePins unpins everything under the sandbox's bpffs dir: each node's
// pin dir through datapath.Remove (which detaches its links first), then
// whatever is left, then the dir itself.
func removePins(root string) error {
	if root == "" {
		return nil
	}
	ents, err := os.ReadDir(root)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("remove pins %s: %w", root, err)
	}
	var errs []error
	for _, e := range ents {
		p := filepath.Join(root, e.Name())
		if e.IsDir() {
			if err := datapath.Remove(p); err != nil {
				// Unlinking the pins is what frees them; fall through.
				errs = append(errs, fmt.Errorf("datapath remove %s: %w", p, err))
			}
		}
	}
	if err := os.RemoveAll(root); err != nil {
		return fmt.Errorf("remove pins %s: %w", root, err)
	}
	if _, err := os.Stat(root); err == nil {
		return errors.Join(append(errs, fmt.Errorf("pins left in %s", root))...)
	}
	return nil
}

// Down tears down the sandbox name under stateRoot ("" = default), with or
// without a state file (after a crash only the leftovers are known by
// name). bpfRoot "" is /sys/fs/bpf.
func Down(ctx context.Context, stateRoot, bpfRoot, name string, log io.Writer) error {
	if stateRoot == "" {
		stateRoot = DefaultStateRoot
	}
	if bpfRoot == "" {
		bpfRoot = DefaultBPFRoot
	}
	if err := ValidateName("sandbox", name); err != nil {
		return err
	}
	s, err := Open(stateRoot, name)
	if err != nil {
		s = &Sandbox{dir: stateDir(stateRoot, name), st: state{Name: name, Pods: map[string]*Pod{}}, children: map[int]chan struct{}{}}
	}
	s.pinRoot = pinRoot(bpfRoot, name)
	s.SetLog(log)
	return s.Down(ctx)
}

// Leftovers lists what a sandbox leaves on the machine: namespaces,
// processes, pins and state. Empty after a successful Down.
func Leftovers(stateRoot, bpfRoot, name string) []string {
	if stateRoot == "" {
		stateRoot = DefaultStateRoot
	}
	if bpfRoot == "" {
		bpfRoot = DefaultBPFRoot
	}
	var out []string
	nss, _ := listNetns(nsPrefix(name))
	for _, n := range nss {
		out = append(out, "netns "+n)
	}
	dir := stateDir(stateRoot, name)
	for _, pid := range findProcesses(dir) {
		out = append(out, fmt.Sprintf("process %d", pid))
	}
	for _, p := range []string{pinRoot(bpfRoot, name), dir} {
		if _, err := os.Stat(p); err == nil {
			out = append(out, "path "+p)
		}
	}
	return out
}
