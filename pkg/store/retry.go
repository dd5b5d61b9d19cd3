package store

import (
	"context"
	"fmt"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
)

// ContentionBackoff paces the read-compare-commit loops of the backends: an
// attempt whose commit lost a race to a concurrent writer waits a jittered,
// exponentially growing pause (1 ms doubling up to ContentionMaxPause,
// each pause stretched by up to 100%) before it reads again, and the loop
// gives up after Steps retries (3.3-6.6 s of pauses in all) with ErrBusy;
// a caller's deadline (an agent's ADD) ends it sooner. Jitter spreads
// writers that collided, so they do not collide again in lock step. (Cap
// is left unset: wait.Backoff ends its steps when it reaches Cap.)
var ContentionBackoff = wait.Backoff{
	Duration: time.Millisecond,
	Factor:   2,
	Jitter:   1,
	Steps:    32,
}

// ContentionMaxPause bounds one pause of ContentionBackoff (before jitter).
var ContentionMaxPause = 128 * time.Millisecond

// Retrier drives one optimistic-concurrency loop:
//
//	r := store.NewRetrier(what)
//	for r.Next(ctx) {
//		read; decide; commit
//		if committed { return ... }
//	}
//	return r.Err()
//
// The first Next returns at once; every later one first waits the next
// step of ContentionBackoff. Next is false once the context ends or the
// steps run out; Err then names the operation and wraps ErrBusy (or the
// context's error).
type Retrier struct {
	what     string
	backoff  wait.Backoff
	attempts int
	err      error
}

// NewRetrier returns a Retrier for the operation named what.
func NewRetrier(what string) *Retrier {
	return &Retrier{what: what, backoff: ContentionBackoff}
}

// Next reports whether to make another attempt, after a backoff pause for
// every attempt but the first.
func (r *Retrier) Next(ctx context.Context) bool {
	if r.attempts == 0 {
		r.attempts++
		return ctx.Err() == nil || r.fail(ctx.Err())
	}
	if r.backoff.Steps <= 0 {
		r.err = fmt.Errorf("%s: gave up after %d attempts lost to concurrent updates: %w", r.what, r.attempts, ErrBusy)
		return false
	}
	d := r.backoff.Step()
	if ContentionMaxPause > 0 && r.backoff.Duration > ContentionMaxPause {
		d = wait.Jitter(ContentionMaxPause, r.backoff.Jitter)
		r.backoff.Duration = ContentionMaxPause // no overflow over many steps
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return r.fail(ctx.Err())
	case <-t.C:
	}
	r.attempts++
	return true
}

func (r *Retrier) fail(err error) bool {
	r.err = fmt.Errorf("%s: after %d attempt(s): %w", r.what, r.attempts, err)
	return false
}

// Attempts returns how many attempts Next has allowed so far.
func (r *Retrier) Attempts() int { return r.attempts }

// Err returns why the loop ended without success.
func (r *Retrier) Err() error {
	if r.err == nil {
		return fmt.Errorf("%s: %w", r.what, ErrBusy)
	}
	return r.err
}
