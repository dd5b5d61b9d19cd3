package etcdstore_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/cni-genie/cni-genie/pkg/store/etcdstore"
)

// endpoints of the embedded etcd shared by all tests of this package; each
// test uses its own key prefix.
var endpoints []string

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	if os.Getenv(childEnv) != "" {
		// A re-executed child (see TestPrivilegedUnixSocketAcrossNetns)
		// only runs its helper test against the parent's server.
		return m.Run()
	}
	// A short path: unix socket paths are limited to 107 bytes.
	dir, err := os.MkdirTemp("", "genie-etcd-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	e, err := etcdstore.StartEmbedded(context.Background(), etcdstore.EmbeddedConfig{DataDir: dir})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer e.Close()
	endpoints = e.Endpoints()
	return m.Run()
}

func randSuffix() string {
	b := make([]byte, 4)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// newStore connects a new client with a prefix unique to the test.
func newStore(t testing.TB) (*etcdstore.Store, string) {
	t.Helper()
	prefix := "/test/" + strings.ReplaceAll(t.Name(), "/", "_") + "-" + randSuffix()
	return newStoreAt(t, prefix), prefix
}

func newStoreAt(t testing.TB, prefix string) *etcdstore.Store {
	t.Helper()
	s, err := etcdstore.New(context.Background(), endpoints, etcdstore.Options{Prefix: prefix})
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}
