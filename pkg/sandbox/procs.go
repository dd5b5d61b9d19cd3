package sandbox

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/cni-genie/cni-genie/pkg/agentapi"
)

// startDetached starts bin with args in the network namespace at netnsPath
// ("" = the caller's), in its own session, with stdout and stderr appended
// to logFile. It returns the pid; the process outlives the caller.
// nsenter --net is used rather than `ip netns exec`, which remounts /sys
// and would hide the bpffs pins from the agent.
func (s *Sandbox) startDetached(netnsPath, logFile, bin string, args ...string) (int, error) {
	if err := os.MkdirAll(filepath.Dir(logFile), 0o755); err != nil {
		return 0, err
	}
	lf, err := os.OpenFile(logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return 0, fmt.Errorf("log file: %w", err)
	}
	defer lf.Close()
	var cmd *exec.Cmd
	if netnsPath != "" {
		cmd = exec.Command("nsenter", append([]string{"--net=" + netnsPath, "--", bin}, args...)...)
	} else {
		cmd = exec.Command(bin, args...)
	}
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("start %s: %w", filepath.Base(bin), err)
	}
	pid := cmd.Process.Pid
	done := make(chan struct{})
	s.children[pid] = done
	// Reap the child if it exits while this process lives, so a killed
	// agent leaves no zombie behind in a long-lived caller (tests).
	go func() { cmd.Wait(); close(done) }()
	return pid, nil
}

// processAlive reports whether pid runs (a zombie counts as dead).
func processAlive(pid int) bool {
	if pid <= 0 {
		return false
	}
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the parenthesised command name.
	i := bytes.LastIndexByte(data, ')')
	if i < 0 || i+2 >= len(data) {
		return false
	}
	return data[i+2] != 'Z' && data[i+2] != 'X'
}

// stopProcess sends SIGTERM, waits up to grace, then SIGKILLs.
func (s *Sandbox) stopProcess(pid int, grace time.Duration) error {
	if !processAlive(pid) {
		return nil
	}
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("stop pid %d: %w", pid, err)
	}
	deadline := time.Now().Add(grace)
	for time.Now().Before(deadline) {
		if !processAlive(pid) {
			s.reap(pid)
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("kill pid %d: %w", pid, err)
	}
	for i := 0; i < 250 && processAlive(pid); i++ {
		time.Sleep(20 * time.Millisecond)
	}
	s.reap(pid)
	return nil
}

func (s *Sandbox) reap(pid int) {
	if done, ok := s.children[pid]; ok {
		select {
		case <-done:
		case <-time.After(5 * time.Second):
		}
		delete(s.children, pid)
	}
}

// ownBinaries are the executables the sandbox starts; only they are
// candidates for findProcesses, so a user's `tail -f <state dir>/...` is
// never killed.
var ownBinaries = map[string]bool{"genied": true, "geniectl": true, "genie": true}

// findProcesses returns the pids of the sandbox's own binaries whose
// command line mentions the sandbox's state dir: every process the sandbox
// starts has a path in it there.
func findProcesses(dir string) []int {
	marker := []byte(dir + "/")
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		cl, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || !bytes.Contains(cl, marker) {
			continue
		}
		exe, err := os.Readlink(filepath.Join("/proc", e.Name(), "exe"))
		if err != nil || !ownBinaries[filepath.Base(strings.TrimSuffix(exe, " (deleted)"))] {
			continue
		}
		if processAlive(pid) {
			out = append(out, pid)
		}
	}
	return out
}

// startAgent starts genied for node n inside the node's namespace.
func (s *Sandbox) startAgent(n *Node, extra []string) error {
	if err := os.MkdirAll(n.PinDir, 0o755); err != nil {
		return fmt.Errorf("node %s: pin dir: %w", n.Name, err)
	}
	os.Remove(n.Socket)
	args := append([]string{
		"--node-name", n.Name,
		"--uplink", NodeUplink,
		"--pin-dir", n.PinDir,
		"--socket", n.Socket,
		"--store-endpoints", s.st.StoreEndpoint,
		"--state-dir", n.StateDir,
		"--metrics-addr", AgentMetricsAddr,
	}, extra...)
	pid, err := s.startDetached(n.Netns, n.LogFile, filepath.Join(s.st.BinDir, "genied"), args...)
	if err != nil {
		return fmt.Errorf("node %s: %w", n.Name, err)
	}
	n.AgentPID = pid
	return nil
}

// waitAgent waits until the node's agent answers STATUS ready.
func (s *Sandbox) waitAgent(ctx context.Context, n *Node) error {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	var last string
	for {
		if !processAlive(n.AgentPID) {
			return fmt.Errorf("node %s: genied exited; see %s:\n%s", n.Name, n.LogFile, tail(n.LogFile, 15))
		}
		r, err := agentStatus(ctx, n.Socket)
		if err == nil && r.Ready {
			return nil
		}
		if err != nil {
			last = err.Error()
		} else {
			last = "not ready: " + r.Message
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("node %s: genied not ready after 60s (%s); see %s", n.Name, last, n.LogFile)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func agentStatus(ctx context.Context, socket string) (*agentapi.StatusResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	return agentapi.NewClient(socket, 2*time.Second).Status(ctx)
}

// RestartAgent stops the node's genied (SIGTERM, then SIGKILL after 10s)
// and starts a new one with the same flags, waiting until it is ready.
// With kill, the agent gets SIGKILL at once (a crash).
func (s *Sandbox) RestartAgent(ctx context.Context, node string, kill bool) error {
	unlock, err := s.lock()
	if err != nil {
		return err
	}
	defer unlock()
	n, err := s.Node(node)
	if err != nil {
		return err
	}
	if err := s.stopAgentLocked(n, kill); err != nil {
		return err
	}
	if err := s.startAgent(n, s.st.AgentArgs); err != nil {
		return err
	}
	if err := s.save(); err != nil {
		return err
	}
	return s.waitAgent(ctx, n)
}

// tail returns the last n lines of a file, for error messages.
func tail(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
