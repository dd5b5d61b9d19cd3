package store_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/cni-genie/cni-genie/pkg/store"
)

func withBackoff(t *testing.T, b wait.Backoff) {
	old := store.ContentionBackoff
	store.ContentionBackoff = b
	t.Cleanup(func() { store.ContentionBackoff = old })
}

// A loop that always loses makes 1+Steps attempts, pauses between them
// (never before the first), and ends with ErrBusy naming the operation.
func TestRetrierGivesUpWithErrBusy(t *testing.T) {
	withBackoff(t, wait.Backoff{Duration: 2 * time.Millisecond, Factor: 1, Jitter: 0.5, Steps: 5})
	r := store.NewRetrier(`put endpoint "blue/c1"`)
	start := time.Now()
	n := 0
	for r.Next(context.Background()) {
		if n == 0 && time.Since(start) > time.Millisecond {
			t.Errorf("first attempt waited %v", time.Since(start))
		}
		n++
	}
	if n != 6 || r.Attempts() != 6 {
		t.Errorf("attempts = %d (%d), want 6", n, r.Attempts())
	}
	if took := time.Since(start); took < 10*time.Millisecond {
		t.Errorf("5 retries took %v: no backoff between attempts", took)
	}
	err := r.Err()
	if !errors.Is(err, store.ErrBusy) || !store.Transient(err) || !strings.Contains(err.Error(), `put endpoint "blue/c1": gave up after 6 attempts`) {
		t.Errorf("err = %v", err)
	}
	if errors.Is(err, store.ErrConflict) {
		t.Errorf("contention reported as a conflict of the store's rules: %v", err)
	}
}

// A cancelled context ends the loop during a pause, with its error.
func TestRetrierStopsWithContext(t *testing.T) {
	withBackoff(t, wait.Backoff{Duration: time.Hour, Factor: 1, Steps: 5})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	r := store.NewRetrier("claim block")
	n := 0
	for r.Next(ctx) {
		n++
	}
	if n != 1 || !errors.Is(r.Err(), context.DeadlineExceeded) {
		t.Errorf("attempts = %d, err = %v", n, r.Err())
	}
}

// The pauses are jittered: two loops do not pause in lock step.
func TestRetrierJitter(t *testing.T) {
	withBackoff(t, wait.Backoff{Duration: 3 * time.Millisecond, Factor: 1, Jitter: 1, Steps: 8})
	total := func() time.Duration {
		r := store.NewRetrier("x")
		start := time.Now()
		for r.Next(context.Background()) {
		}
		return time.Since(start)
	}
	seen := map[time.Duration]bool{}
	for range 4 {
		seen[total().Round(time.Millisecond)] = true
	}
	if len(seen) < 2 {
		t.Errorf("four loops of jittered pauses all took the same time: %v", seen)
	}
}

// Reaching the pause bound does not end the loop early (wait.Backoff's
// own Cap would): every step runs, each pause at most the bound (plus
// jitter).
func TestRetrierMaxPause(t *testing.T) {
	withBackoff(t, wait.Backoff{Duration: time.Millisecond, Factor: 2, Jitter: 0.1, Steps: 12})
	old := store.ContentionMaxPause
	store.ContentionMaxPause = 2 * time.Millisecond
	t.Cleanup(func() { store.ContentionMaxPause = old })
	r := store.NewRetrier("x")
	start := time.Now()
	for r.Next(context.Background()) {
	}
	if r.Attempts() != 13 {
		t.Errorf("attempts = %d, want 13 (1 + 12 steps)", r.Attempts())
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("12 pauses bounded by 2 ms took %v", took)
	}
}
