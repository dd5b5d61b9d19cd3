// Package etcdtest runs a real embedded etcd for tests of packages that
// need a store: one server per test binary (start it in TestMain), one
// key prefix per test, so tests never see each other's objects.
package etcdtest

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

// Server is an embedded etcd in a temporary directory.
type Server struct {
	*etcdstore.Embedded
	dir string
}

// Start starts an embedded etcd listening on a unix socket in a new
// temporary directory. Stop it (and remove the directory) with Stop.
func Start() (*Server, error) {
	// A short path: unix socket paths are limited to 107 bytes.
	dir, err := os.MkdirTemp("", "genie-etcd-")
	if err != nil {
		return nil, fmt.Errorf("etcdtest: %w", err)
	}
	e, err := etcdstore.StartEmbedded(context.Background(), etcdstore.EmbeddedConfig{DataDir: dir})
	if err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("etcdtest: %w", err)
	}
	return &Server{Embedded: e, dir: dir}, nil
}

// Stop stops the server and removes its directory.
func (s *Server) Stop() {
	s.Close()
	os.RemoveAll(s.dir)
}

// Main starts a server, runs the tests and stops it; use as
//
//	var srv *etcdtest.Server
//	func TestMain(m *testing.M) { etcdtest.Main(m, &srv) }
func Main(m *testing.M, srv **Server) {
	s, err := Start()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	*srv = s
	code := m.Run()
	s.Stop()
	os.Exit(code)
}

// UniquePrefix returns a key prefix unique to t.
func UniquePrefix(t testing.TB) string {
	b := make([]byte, 4)
	rand.Read(b)
	return "/test/" + strings.ReplaceAll(t.Name(), "/", "_") + "-" + hex.EncodeToString(b)
}

// NewStore connects a new client under prefix (UniquePrefix(t) if empty),
// closed at the end of the test.
func (s *Server) NewStore(t testing.TB, prefix string) *etcdstore.Store {
	t.Helper()
	if prefix == "" {
		prefix = UniquePrefix(t)
	}
	st, err := etcdstore.New(context.Background(), s.Endpoints(), etcdstore.Options{Prefix: prefix})
	if err != nil {
		t.Fatalf("etcdtest: connect: %v", err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}
