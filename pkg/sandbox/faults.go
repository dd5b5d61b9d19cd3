package sandbox

import (
	"context"
	"fmt"
	"strings"
	"time"
)

// Fault injection for tests of failure handling (agent loss, node loss,
// partitions). Everything acts on the sandbox's own processes and links.

// StopAgent stops the node's genied (SIGTERM, or SIGKILL at once with
// kill) and leaves it stopped; the pinned data plane keeps forwarding.
func (s *Sandbox) StopAgent(node string, kill bool) error {
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
	n.AgentPID = 0
	return s.save()
}

// stopAgentLocked stops n's genied: SIGTERM with 10 s of grace before
// SIGKILL, or SIGKILL at once with kill. The caller holds the sandbox lock.
func (s *Sandbox) stopAgentLocked(n *Node, kill bool) error {
	grace := 10 * time.Second
	if kill {
		grace = 0
	}
	if err := s.stopProcess(n.AgentPID, grace); err != nil {
		return fmt.Errorf("node %s: %w", n.Name, err)
	}
	return nil
}

// StartAgent starts the node's genied if it is not running and waits
// until it is ready.
func (s *Sandbox) StartAgent(ctx context.Context, node string) error {
	unlock, err := s.lock()
	if err != nil {
		return err
	}
	defer unlock()
	n, err := s.Node(node)
	if err != nil {
		return err
	}
	if processAlive(n.AgentPID) {
		return fmt.Errorf("node %s: genied already runs (pid %d)", n.Name, n.AgentPID)
	}
	if err := s.startAgent(n, s.st.AgentArgs); err != nil {
		return err
	}
	if err := s.save(); err != nil {
		return err
	}
	return s.waitAgent(ctx, n)
}

// SetUplink cuts (up=false) or restores the node's link to the fabric by
// setting its bridge port down or up: a partition of that node from all
// others, with the node's own state untouched.
func (s *Sandbox) SetUplink(node string, up bool) error {
	n, err := s.Node(node)
	if err != nil {
		return err
	}
	port := "p" + strings.TrimPrefix(n.Name, "node")
	h, nh, err := nsHandle(s.st.Fabric)
	if err != nil {
		return err
	}
	defer h.Close()
	defer nh.Close()
	l, err := h.LinkByName(port)
	if err != nil {
		return fmt.Errorf("node %s: fabric port %s: %w", n.Name, port, err)
	}
	if up {
		err = h.LinkSetUp(l)
	} else {
		err = h.LinkSetDown(l)
	}
	if err != nil {
		return fmt.Errorf("node %s: set fabric port %s up=%v: %w", n.Name, port, up, err)
	}
	return nil
}
