package kubestore

import (
	"context"
	"fmt"
	"strconv"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	kwatch "k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/tools/cache"
	watchtools "k8s.io/client-go/tools/watch"

	"github.com/cni-genie/cni-genie/pkg/store"
)

// watch streams the changes of r's objects matching selector after
// fromRevision (0 = from now) into ch until ctx ends, converting each with
// conv. A failure is sent as one errEv event; ch is closed on return.
//
// The stream is client-go's RetryWatcher: when the API server ends a
// watch (--min-request-timeout, randomized), restarts, or refuses
// connections for a while, it watches again from the last
// resourceVersion seen, kept fresh by bookmarks (AllowWatchBookmarks),
// so consumers see one unbroken stream and a quiet node resumes where it
// was instead of listing again. A start revision older than the server's
// window (its watch cache, or etcd's compaction) is answered with 410
// Gone / Expired: that is store.ErrCompacted. 401 and 403 end the watch
// too; everything else (connection refused, 5xx, 429) is retried.
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
	lw := &cache.ListWatch{WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (kwatch.Interface, error) {
		o.LabelSelector = selector
		return s.ri(r).Watch(ctx, o)
	}}
	rw, err := watchtools.NewRetryWatcherWithContext(ctx, rv, lw)
	if err != nil {
		fail(err)
		return
	}
	defer rw.Stop()
	for {
		var ev kwatch.Event
		var open bool
		select {
		case <-ctx.Done():
			return
		case ev, open = <-rw.ResultChan():
		}
		if !open {
			fail(fmt.Errorf("from revision %s: watch ended", rv))
			return
		}
		if ev.Type == kwatch.Error {
			fail(watchErr(rv, apierrors.FromObject(ev.Object)))
			return
		}
		u, isU := ev.Object.(*unstructured.Unstructured)
		if !isU {
			fail(fmt.Errorf("unexpected %T in %s event", ev.Object, ev.Type))
			return
		}
		var typ store.EventType
		switch ev.Type {
		case kwatch.Added, kwatch.Modified:
			typ = store.EventPut
		case kwatch.Deleted:
			typ = store.EventDelete
		default:
			continue // bookmarks are consumed by the RetryWatcher
		}
		evRV := u.GetResourceVersion()
		rev, err := parseRV(evRV)
		if err != nil {
			fail(err)
			return
		}
		o, err := fromU[T](u)
		if err != nil {
			fail(err)
			return
		}
		e, err := conv(typ, rev, o)
		if err != nil {
			fail(fmt.Errorf("decode %s %q at revision %d: %w", r.kind, u.GetName(), rev, err))
			return
		}
		if !send(e) {
			return
		}
		rv = evRV
	}
}

// watchErr names the revision of a watch that failed and maps "too old"
// to store.ErrCompacted.
func watchErr(rv string, err error) error {
	if apierrors.IsResourceExpired(err) || apierrors.IsGone(err) {
		return fmt.Errorf("revision %s is no longer available (%s): %w", rv, apiMessage(err), store.ErrCompacted)
	}
	return wrap(fmt.Sprintf("from revision %s", rv), err)
}
