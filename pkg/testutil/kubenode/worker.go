package kubenode

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/cni-genie/cni-genie/pkg/testutil/proc"
)

// AddNode starts a worker: containerd and kubelet (no control plane) in a
// network and mount namespace of their own, registered with n's API
// server as opts.Name. Its eth0 (WorkerIP/24) is the other end of n's
// eth0 veth, so the two nodes share one segment, as two machines on a
// switch; its default route, and so the kubernetes Service address, is
// via n. Unset options are n's (CNIBin, NetConf, Images, SandboxImage).
// One worker per control-plane node. n.Stop stops it too.
func (n *Node) AddNode(ctx context.Context, opts Options) (*Node, error) {
	if n.control != nil {
		return nil, errors.New("add node: not a control-plane node")
	}
	n.mu.Lock()
	busy := len(n.workers) > 0 || n.stopped
	n.mu.Unlock()
	if busy {
		return nil, errors.New("add node: only one worker per control-plane node")
	}
	if opts.Name == "" || opts.Name == n.Name {
		return nil, fmt.Errorf("add node: name %q: want one other than %q", opts.Name, n.Name)
	}
	opts.BinDir = n.opts.BinDir
	if opts.CNIBin == nil {
		opts.CNIBin = n.opts.CNIBin
	}
	if opts.NetConf == nil {
		opts.NetConf = n.opts.NetConf
	}
	if opts.Images == nil {
		opts.Images = n.opts.Images
	}
	if opts.SandboxImage == "" {
		opts.SandboxImage = n.opts.SandboxImage
	}
	if opts.Logf == nil {
		opts.Logf = n.opts.Logf
	}
	dir, err := os.MkdirTemp("", "genie-kubenode-")
	if err != nil {
		return nil, err
	}
	w := &Node{Name: opts.Name, Dir: dir, IP: WorkerIP, opts: opts, procs: map[string]*proc.Proc{}, spawner: proc.NewSpawner(),
		cgroupRoot: "genie-kn-" + filepath.Base(dir)[len("genie-kubenode-"):], control: n, pki: n.pki,
		AdminKubeconfig: n.AdminKubeconfig}
	n.mu.Lock()
	n.workers = append(n.workers, w)
	n.mu.Unlock()
	ok := false
	defer func() {
		if !ok {
			w.Stop()
		}
	}()
	begin := time.Now()
	if err := w.startHolder(); err != nil {
		return nil, err
	}
	// The control node's eth0p becomes the worker's eth0.
	if out, err := n.Exec("ip", "link", "set", "eth0p", "netns", strconv.Itoa(w.holderPID)); err != nil {
		return nil, fmt.Errorf("add node: move eth0p into %s: %w\n%s", w.Name, err, out)
	}
	if err := w.setupNamespaces(); err != nil {
		return nil, err
	}
	if err := w.writeNodeConfig(); err != nil {
		return nil, err
	}
	if err := w.StartContainerd(ctx); err != nil {
		return nil, err
	}
	for _, img := range opts.Images {
		if out, err := w.Ctr("images", "import", img); err != nil {
			return nil, fmt.Errorf("import %s on %s: %w\n%s", img, w.Name, err, out)
		}
	}
	if err := w.StartKubelet(ctx); err != nil {
		return nil, err
	}
	if err := w.waitNodeReady(ctx); err != nil {
		return nil, err
	}
	w.NodeReady = time.Since(begin)
	opts.Logf("kubenode: worker %s ready in %v, dir %s", w.Name, w.NodeReady.Round(time.Millisecond), dir)
	ok = true
	return w, nil
}

// returnLink gives a worker's eth0 back to its control node (as eth0p),
// so that the control node keeps its eth0 when the worker's namespace
// goes: deleting either end of a veth deletes both.
func (w *Node) returnLink() {
	c := w.control
	if c == nil || w.holderPID == 0 {
		return
	}
	c.mu.Lock()
	stopped := c.stopped
	c.mu.Unlock()
	if stopped {
		return
	}
	if out, err := w.Exec("ip", "link", "set", "eth0", "down", "name", "eth0p", "netns", strconv.Itoa(c.holderPID)); err != nil {
		w.opts.Logf("kubenode: give eth0 of %s back: %v: %s", w.Name, err, out)
		return
	}
	c.Exec("ip", "link", "set", "eth0p", "up")
}
