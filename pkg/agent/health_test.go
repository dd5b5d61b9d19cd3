package agent

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
)

// TestProbeEndpoints checks the DaemonSet's probes: /healthz answers while
// the process serves, /readyz follows the readiness function with its
// reason.
func TestProbeEndpoints(t *testing.T) {
	var ready atomic.Bool
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	addr, err := newMetrics(nil).serve(ctx, "127.0.0.1:0", false, slog.Default(), func(context.Context) (bool, string) {
		return ready.Load(), "connecting to store"
	})
	if err != nil {
		t.Fatal(err)
	}
	get := func(path string) (int, string) {
		resp, err := http.Get("http://" + addr.String() + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, _ := get("/healthz"); code != 200 {
		t.Fatalf("/healthz %d", code)
	}
	if code, body := get("/readyz"); code != 503 || !strings.Contains(body, "connecting to store") {
		t.Fatalf("/readyz before ready: %d %q", code, body)
	}
	ready.Store(true)
	if code, _ := get("/readyz"); code != 200 {
		t.Fatalf("/readyz when ready: %d", code)
	}
	if code, _ := get("/metrics"); code != 200 {
		t.Fatalf("/metrics %d", code)
	}
	if code, _ := get("/debug/pprof/heap"); code != 404 {
		t.Fatalf("/debug/pprof/heap without --pprof: %d, want 404", code)
	}
}

// TestPprofEndpoint: with --pprof the metrics address also serves Go's
// profiles.
func TestPprofEndpoint(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	addr, err := newMetrics(nil).serve(ctx, "127.0.0.1:0", true, slog.Default(), func(context.Context) (bool, string) { return true, "" })
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get("http://" + addr.String() + "/debug/pprof/heap?debug=1")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || !strings.Contains(string(b), "heap profile") {
		t.Fatalf("/debug/pprof/heap: %d %.80q", resp.StatusCode, b)
	}
}
