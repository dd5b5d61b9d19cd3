package sandboxtest_test

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/cni-genie/cni-genie/pkg/sandbox"
	"github.com/cni-genie/cni-genie/pkg/sandbox/sandboxtest"
	"github.com/cni-genie/cni-genie/pkg/testutil/testenv"
)

func TestTailLines(t *testing.T) {
	for _, tc := range []struct {
		in   string
		n    int
		want string
	}{
		{"a\nb\nc\n", 2, "b\nc"},
		{"a\nb\nc", 5, "a\nb\nc"},
		{"", 3, ""},
	} {
		if got := sandboxtest.TailLines(tc.in, tc.n); got != tc.want {
			t.Errorf("TailLines(%q, %d) = %q, want %q", tc.in, tc.n, got, tc.want)
		}
	}
}

// The binaries are built only for runs that can use them, and a sandbox
// comes up from them and goes down leaving nothing (checked by New).
func TestPrivilegedNew(t *testing.T) {
	sb := sandboxtest.New(t, "sbt", sandbox.Options{Nodes: 1})
	if len(sb.Nodes()) != 1 {
		t.Fatalf("nodes = %d, want 1", len(sb.Nodes()))
	}
	if sandboxtest.BinDir() == "" {
		t.Fatal("no bin dir after a successful New")
	}
}

func TestMain(m *testing.M) { sandboxtest.Main(m) }

// EchoUDP answers a datagram sent to it, inside a namespace of the test's
// own, and stops when closed.
func TestPrivilegedEchoUDP(t *testing.T) {
	testenv.RequireRoot(t, "creates a network namespace")
	n := testenv.NewNS(t)
	err := n.Do(func(ns.NetNS) error {
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return err
		}
		return netlink.LinkSetUp(lo)
	})
	if err != nil {
		t.Fatal(err)
	}
	e := sandbox.Endpoint{Netns: n.Path()}
	srv := sandboxtest.EchoUDP(t, e, "127.0.0.1:7100")
	cli, err := sandbox.ListenUDP(e, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	dst := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 7100}
	ask := func() error {
		if _, err := cli.WriteTo([]byte("hello"), dst); err != nil {
			return err
		}
		cli.SetReadDeadline(time.Now().Add(2 * time.Second))
		buf := make([]byte, 64)
		k, _, err := cli.ReadFrom(buf)
		if err == nil && !bytes.Equal(buf[:k], []byte("hello")) {
			t.Fatalf("echo = %q, want hello", buf[:k])
		}
		return err
	}
	if err := ask(); err != nil {
		t.Fatalf("no echo: %v", err)
	}
	srv.Close()
	if err := ask(); err == nil {
		t.Fatal("echo after close")
	}
}

// ServeTCP runs its handler on connections to it inside a namespace of
// the test's own, each closed after its handler, and stops when closed.
func TestPrivilegedServeTCP(t *testing.T) {
	testenv.RequireRoot(t, "creates a network namespace")
	n := testenv.NewNS(t)
	if err := n.Do(func(ns.NetNS) error {
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return err
		}
		return netlink.LinkSetUp(lo)
	}); err != nil {
		t.Fatal(err)
	}
	e := sandbox.Endpoint{Netns: n.Path()}
	l := sandboxtest.ServeTCP(t, e, "127.0.0.1:7101", func(c net.Conn) {
		fmt.Fprintf(c, "hi %s\n", c.RemoteAddr())
	})
	dial := func() (string, error) {
		c, err := sandbox.DialTCP(t.Context(), e, "127.0.0.1:7101")
		if err != nil {
			return "", err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(2 * time.Second))
		b, err := io.ReadAll(c) // EOF: the server closed after the handler
		return string(b), err
	}
	got, err := dial()
	if err != nil || !strings.HasPrefix(got, "hi 127.0.0.1:") {
		t.Fatalf("answer %q, %v; want the handler's line, then EOF", got, err)
	}
	l.Close()
	if _, err := dial(); err == nil {
		t.Fatal("connected after close")
	}
}
