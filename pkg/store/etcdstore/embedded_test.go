package etcdstore_test

import (
	"bytes"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cni-genie/cni-genie/pkg/store/etcdstore"
	"github.com/cni-genie/cni-genie/pkg/vpc"
)

// A second server on a data dir in use fails at once (etcd itself would
// block forever) and leaves the first one serving.
func TestStartEmbeddedDataDirInUse(t *testing.T) {
	dir := shortTempDir(t)
	e, err := etcdstore.StartEmbedded(ctx, etcdstore.EmbeddedConfig{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	e2, err := etcdstore.StartEmbedded(ctx, etcdstore.EmbeddedConfig{DataDir: dir, StartTimeout: 5 * time.Second})
	if err == nil {
		e2.Close()
		t.Fatal("second server on the same data dir started")
	}
	if !strings.Contains(err.Error(), "is in use by another server") {
		t.Fatalf("err = %v", err)
	}
	s, err := etcdstore.New(ctx, e.Endpoints(), etcdstore.Options{DialTimeout: 2 * time.Second})
	if err != nil {
		t.Fatalf("first server no longer reachable: %v", err)
	}
	s.Close()
}

// etcd's own logging stays at warn level and goes to the given logger.
func TestEmbeddedQuiet(t *testing.T) {
	var buf safeBuffer
	lg := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	e, err := etcdstore.StartEmbedded(ctx, etcdstore.EmbeddedConfig{DataDir: shortTempDir(t), Logger: lg})
	if err != nil {
		t.Fatal(err)
	}
	s, err := etcdstore.New(ctx, e.Endpoints(), etcdstore.Options{Logger: lg})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateVPC(ctx, vpc.VPC{Name: "q", CIDR: netip.MustParsePrefix("10.0.0.0/8")}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	e.Close()
	for _, l := range strings.Split(buf.String(), "\n") {
		if strings.Contains(l, "level=INFO") || strings.Contains(l, "level=DEBUG") {
			t.Errorf("etcd logged below warn: %s", l)
		}
	}
}

type safeBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *safeBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *safeBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
