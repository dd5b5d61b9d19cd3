package kubestore

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	kwatch "k8s.io/apimachinery/pkg/watch"

	"github.com/cni-genie/cni-genie/pkg/store"
)

// watch streams the changes of r's objects matching selector after
// fromRevision (0 = from now) into ch until ctx ends, converting each with
// conv. A failure is sent as one errEv event; ch is closed on return.
//
// The API server ends every watch after a while (--min-request-timeout,
// randomized); watch then resumes from the last resourceVersion seen,
// kept fresh by bookmarks, so consumers see one unbroken stream. A start
// revision older than the server's window (the watch cache, or etcd's
// compaction) is answered with 410 Gone / Expired: that is
// store.ErrCompacted.
func watch[T any, E any](ctx context.Context, s *Store, r resource, selector string, fromRevision int64, what string,
	conv func(store.EventType, int64, *T) (E, error), errEv func(error) E, ch chan<- E) {
	defer close(ch)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	send := func(e E) bool {
		select {
		case ch <- e:
			return true
		case <-ctx.Done():
			return false
		}
	}
	fail := func(err error) {
		if ctx.Err() == nil {
			send(errEv(fmt.Errorf("%s: %w", what, err)))
		}
	}
	rv := ""
	if fromRevision > 0 {
		rv = strconv.FormatInt(fromRevision, 10)
	} else {
		l, err := s.ri(r).List(ctx, metav1.ListOptions{LabelSelector: selector, Limit: 1})
		if err != nil {
			fail(err)
			return
		}
		rv = l.GetResourceVersion()
	}
	var failingSince time.Time
	backoff := watchBackoffMin
	pause := func() bool {
		select {
		case <-ctx.Done():
			return false
		case <-time.After(backoff):
			backoff = min(2*backoff, watchBackoffMax)
			return true
		}
	}
	for {
		began, startRV := time.Now(), rv
		w, err := s.ri(r).Watch(ctx, metav1.ListOptions{LabelSelector: selector, ResourceVersion: rv, AllowWatchBookmarks: true})
		if err != nil {
			// An API server restarting or briefly unreachable: retry from
			// the same revision for a while, as etcd's client does.
			if transient(err) && ctx.Err() == nil {
				if failingSince.IsZero() {
					failingSince = began
				}
				if time.Since(failingSince) < WatchRetryFor && pause() {
					continue
				}
			}
			fail(watchErr(rv, err))
			return
		}
		failingSince = time.Time{}
		next, ok := func() (string, bool) {
			defer w.Stop()
			for {
				var ev kwatch.Event
				var open bool
				select {
				case <-ctx.Done():
					return rv, false
				case ev, open = <-w.ResultChan():
				}
				if !open {
					return rv, true
				}
				if ev.Type == kwatch.Error {
					fail(watchErr(rv, apierrors.FromObject(ev.Object)))
					return rv, false
				}
				u, isU := ev.Object.(*unstructured.Unstructured)
				if !isU {
					fail(fmt.Errorf("unexpected %T in %s event", ev.Object, ev.Type))
					return rv, false
				}
				evRV := u.GetResourceVersion()
				var typ store.EventType
				switch ev.Type {
				case kwatch.Bookmark:
					rv = evRV
					continue
				case kwatch.Added, kwatch.Modified:
					typ = store.EventPut
				case kwatch.Deleted:
					typ = store.EventDelete
				default:
					continue
				}
				rev, err := parseRV(evRV)
				if err != nil {
					fail(err)
					return rv, false
				}
				o, err := fromU[T](u)
				if err != nil {
					fail(err)
					return rv, false
				}
				e, err := conv(typ, rev, o)
				if err != nil {
					fail(fmt.Errorf("decode %s %q at revision %d: %w", r.kind, u.GetName(), rev, err))
					return rv, false
				}
				if !send(e) {
					return rv, false
				}
				rv = evRV
			}
		}()
		if !ok || ctx.Err() != nil {
			return
		}
		// The server closed the watch: resume. A watch that ends at once
		// and delivered nothing new waits first, so a server that keeps
		// closing watches is not hammered.
		if next == startRV && time.Since(began) < time.Second {
			if !pause() {
				return
			}
		} else {
			backoff = watchBackoffMin
		}
		rv = next
	}
}

// WatchRetryFor is how long a watch keeps retrying to reach an API server
// that refuses connections or answers with server errors (a restart, a
// rolling upgrade) before it reports the failure as an EventError.
var WatchRetryFor = 30 * time.Second

const (
	watchBackoffMin = 100 * time.Millisecond
	watchBackoffMax = 2 * time.Second
)

// transient reports whether a failed watch request may succeed if tried
// again: no answer at all, or a server error or throttling. Refusals
// (401, 403, 404, 400, 410) are final.
func transient(err error) bool {
	var se apierrors.APIStatus
	if !errors.As(err, &se) {
		return true // connection refused, reset, timeout
	}
	code := se.Status().Code
	return code >= 500 || code == 429
}

// watchErr names the revision of a watch that failed and maps "too old"
// to store.ErrCompacted.
func watchErr(rv string, err error) error {
	if apierrors.IsResourceExpired(err) || apierrors.IsGone(err) {
		return fmt.Errorf("revision %s is no longer available (%s): %w", rv, apiMessage(err), store.ErrCompacted)
	}
	var se apierrors.APIStatus
	if errors.As(err, &se) {
		return wrap(fmt.Sprintf("from revision %s", rv), err)
	}
	return err
}
