// Package sandboxtest runs cni-genie sandboxes (pkg/sandbox) from tests
// and benchmarks: the product binaries built once per test binary, the
// skip rules, and a sandbox whose teardown is checked to leave nothing
// behind.
//
// # Design notes
//
// Building genie, genied and geniectl takes a while, so Main builds them
// once, before any test, into a temporary directory it removes at exit;
// it only builds when a sandbox can run at all (root, not -short), so
// unprivileged runs stay fast. A build failure is not reported by Main
// but by RequirePrivileged, as a failure of each test that needed the
// binaries, so it cannot pass silently.
//
// Sandbox names get a random suffix (testenv.RandSuffix): sandboxes of
// parallel test packages share the host's namespaces, links and bpffs.
package sandboxtest

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"testing"

	"github.com/cni-genie/cni-genie/pkg/sandbox"
	"github.com/cni-genie/cni-genie/pkg/testutil/testenv"
)

var (
	binDir   string
	buildErr error
)

// Main builds genie, genied and geniectl into a temporary directory when
// a sandbox can run here (root, not -short), runs the tests, removes the
// directory and exits; call it from TestMain:
//
//	func TestMain(m *testing.M) { sandboxtest.Main(m) }
func Main(m *testing.M) {
	flag.Parse()
	if os.Geteuid() != 0 || testing.Short() {
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "genie-test-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	buildErr = sandbox.BuildBinaries(dir)
	binDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// BinDir is the directory of the binaries Main built; empty when it did
// not build them.
func BinDir() string { return binDir }

// RequirePrivileged skips unless a sandbox can run here (not -short,
// root, bpffs mounted), and fails if Main could not build the binaries.
func RequirePrivileged(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("skipped in -short mode")
	}
	testenv.RequireRoot(t, "network namespaces, BPF")
	if err := sandbox.CheckBPFFS(sandbox.DefaultBPFRoot); err != nil {
		t.Skipf("needs bpffs: %v", err)
	}
	if buildErr != nil {
		t.Fatal(buildErr)
	}
}

// New brings up a sandbox named namePrefix plus a random suffix with o's
// other settings, the binaries Main built and the CNI reference plugins,
// logging to the test. Its cleanup prints the tail of every genied log
// when the test failed, takes the sandbox down, and fails the test if
// the teardown left anything behind.
func New(t testing.TB, namePrefix string, o sandbox.Options) *sandbox.Sandbox {
	t.Helper()
	RequirePrivileged(t)
	name := namePrefix + testenv.RandSuffix()
	o.Name, o.BinDir, o.Log = name, binDir, Log(t)
	o.CNIBinDir, _ = sandbox.TestCNIBinDir()
	sb, err := sandbox.Up(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, n := range sb.Nodes() {
				if data, err := os.ReadFile(n.LogFile); err == nil {
					t.Logf("%s genied log (tail):\n%s", n.Name, TailLines(string(data), 40))
				}
			}
		}
		if err := sb.Down(context.Background()); err != nil {
			t.Errorf("down: %v", err)
		}
		if left := sandbox.Leftovers("", "", name); len(left) > 0 {
			t.Errorf("down left %v", left)
		}
	})
	return sb
}

// Log returns a writer that logs each write to t, one t.Log per write.
func Log(t testing.TB) io.Writer { return logWriter{t} }

type logWriter struct{ t testing.TB }

func (w logWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

// EchoUDP listens on addr in e's namespace and sends every datagram back
// to its sender until the returned socket is closed (by the caller, or at
// the end of the test).
func EchoUDP(t testing.TB, e sandbox.Endpoint, addr string) net.PacketConn {
	t.Helper()
	srv, err := sandbox.ListenUDP(e, addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	go func() {
		buf := make([]byte, 64)
		for {
			k, a, err := srv.ReadFrom(buf)
			if err != nil {
				return
			}
			srv.WriteTo(buf[:k], a)
		}
	}()
	return srv
}

// ServeTCP listens on addr in e's namespace and runs handle on every
// connection (in its own goroutine, the connection closed after it) until
// the listener is closed (by the caller, or at the end of the test).
func ServeTCP(t testing.TB, e sandbox.Endpoint, addr string, handle func(net.Conn)) net.Listener {
	t.Helper()
	l, err := sandbox.ListenTCP(e, addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				handle(c)
			}()
		}
	}()
	return l
}

// TailLines returns the last n lines of s.
func TailLines(s string, n int) string {
	l := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, "\n")
}
