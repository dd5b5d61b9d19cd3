package sandbox

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/containernetworking/plugins/pkg/ns"
	"golang.org/x/sys/unix"
)

// NetnsDir is where named network namespaces are bind-mounted, as with
// `ip netns add`.
const NetnsDir = "/run/netns"

// netnsPath returns the bind-mount path of the named namespace.
func netnsPath(name string) string { return filepath.Join(NetnsDir, name) }

// createNetns creates a network namespace and bind-mounts it at
// /run/netns/<name>. The namespace is created by a goroutine that locks its
// OS thread, unshares, mounts and then exits still locked, so the Go runtime
// throws the thread away instead of reusing it in the wrong namespace.
func createNetns(name string) (string, error) {
	if err := os.MkdirAll(NetnsDir, 0o755); err != nil {
		return "", fmt.Errorf("create netns %q: %w", name, err)
	}
	p := netnsPath(name)
	f, err := os.OpenFile(p, os.O_CREATE|os.O_EXCL|os.O_RDONLY, 0o444)
	if err != nil {
		return "", fmt.Errorf("create netns %q: %w", name, err)
	}
	f.Close()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// No UnlockOSThread: the thread dies with the goroutine.
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("unshare: %w", err)
			return
		}
		src := fmt.Sprintf("/proc/%d/task/%d/ns/net", os.Getpid(), unix.Gettid())
		if err := unix.Mount(src, p, "none", unix.MS_BIND, ""); err != nil {
			errc <- fmt.Errorf("bind mount: %w", err)
			return
		}
		errc <- nil
	}()
	if err := <-errc; err != nil {
		os.Remove(p)
		return "", fmt.Errorf("create netns %q: %w", name, err)
	}
	// Bring loopback up: probes and iperf3 inside may use it.
	if err := inNetns(p, func() error { return linkUp("lo") }); err != nil {
		deleteNetns(name)
		return "", fmt.Errorf("create netns %q: %w", name, err)
	}
	return p, nil
}

// deleteNetns unmounts and removes a named namespace; a missing one is not
// an error. The kernel frees the namespace (and its links) once no process
// or mount holds it any more.
func deleteNetns(name string) error {
	p := netnsPath(name)
	if err := unix.Unmount(p, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("delete netns %q: unmount: %w", name, err)
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("delete netns %q: %w", name, err)
	}
	return nil
}

// listNetns returns the names of the namespaces in NetnsDir starting with
// prefix.
func listNetns(prefix string) ([]string, error) {
	ents, err := os.ReadDir(NetnsDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list netns: %w", err)
	}
	var out []string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), prefix) {
			out = append(out, e.Name())
		}
	}
	return out, nil
}

// inNetns runs fn on a goroutine locked to an OS thread that has entered
// the namespace at path (containernetworking's ns.Do). Sockets fn creates
// stay in that namespace after fn returns.
func inNetns(path string, fn func() error) error {
	return ns.WithNetNSPath(path, func(ns.NetNS) error { return fn() })
}

// InNetns runs fn inside the network namespace at path, on a locked OS
// thread. Sockets opened by fn belong to that namespace for their whole
// life, which is how tests and benchmarks talk between pods without
// leaving the process.
func InNetns(path string, fn func() error) error { return inNetns(path, fn) }
