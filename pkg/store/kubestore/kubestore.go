package kubestore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"

	coordv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/cni-genie/cni-genie/pkg/store"
	"github.com/cni-genie/cni-genie/pkg/vpc"
)

// listPage is the page size of lists (limit/continue); all pages of one
// list share the first page's resourceVersion.
const listPage = 500

// Options configures a Store.
type Options struct {
	// Scope, if set (a DNS-1123 label), prefixes every object name with
	// "<scope>." and labels every object genie.cni.io/scope=<scope>, so
	// several independent stores share one cluster (tests, or sandboxes on
	// a shared API server). Empty: no prefix, and objects carrying a scope
	// label are ignored.
	Scope string
	// QPS and Burst of a client-side rate limiter; zero QPS means none.
	// An agent's burst of ADDs must not queue behind a limiter tuned for
	// controllers (client-go's default, 5 QPS, would serialize a burst of
	// 20 pods over seconds); the API server protects itself with priority
	// and fairness.
	QPS   float32
	Burst int
	// LeaseNamespace holds the Leases of Lead (store.LeaderElector).
	// Empty: the namespace of the in-cluster service account, else
	// "kube-system".
	LeaseNamespace string
	// LeaseDuration of Lead's Leases: a leader that stops renewing is
	// replaced after at most this long. Zero means 15s.
	LeaseDuration time.Duration
	// DirectoryShards is the shard count of the endpoint directory's
	// genie.cni.io/shard labels (a power of two; zero means
	// directory.DefaultShards). Every writer of a cluster must use the
	// same count (see directory.go).
	DirectoryShards int
}

// Store is the Kubernetes implementation of store.Store: one CRD object
// per VPC, subnet, node, block, endpoint, VNI claim and endpoint index.
type Store struct {
	dyn   dynamic.Interface
	hc    *http.Client
	cfg   *rest.Config // as connected, for the typed clients of Lead
	scope string
	opts  Options
	// beatState: the egress heartbeats' Lease client (egress.go).
	beatState
	// vipStaleAfter overrides defaultVIPStaleAfter (tests).
	vipStaleAfter time.Duration
	// blockLens caches the block prefix length of subnets ("vpc/subnet"),
	// a hint only: PutEndpoint checks it against the subnet it reads.
	blockLens sync.Map
	// vnis caches VNIs by VPC UID (immutable once set).
	vnis sync.Map
}

var _ store.Store = (*Store)(nil)

// New connects with the kubeconfig at path (empty: the in-cluster service
// account) and checks that the API server answers and serves the CRDs.
func New(ctx context.Context, kubeconfig string, opts Options) (*Store, error) {
	cfg, err := RESTConfig(kubeconfig)
	if err != nil {
		return nil, err
	}
	return NewForConfig(ctx, cfg, opts)
}

// RESTConfig loads the kubeconfig at path, or the in-cluster service
// account's configuration when path is empty.
func RESTConfig(kubeconfig string) (*rest.Config, error) {
	if kubeconfig == "" {
		cfg, err := rest.InClusterConfig()
		if err != nil {
			return nil, fmt.Errorf("connect to kubernetes: no kubeconfig given and not in a cluster: %w", err)
		}
		return cfg, nil
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("connect to kubernetes: load kubeconfig %q: %w", kubeconfig, err)
	}
	return cfg, nil
}

// NewForConfig connects with cfg (copied) and checks that the API server
// answers and serves every CRD of deploy/crds/genie.cni.io_*.yaml.
func NewForConfig(ctx context.Context, cfg *rest.Config, opts Options) (*Store, error) {
	if opts.Scope != "" {
		if err := vpc.ValidateName(opts.Scope); err != nil {
			return nil, fmt.Errorf("connect to kubernetes: scope: %w", err)
		}
	}
	cfg = rest.CopyConfig(cfg)
	cfg.QPS, cfg.Burst, cfg.RateLimiter = opts.QPS, opts.Burst, nil
	if cfg.QPS == 0 {
		cfg.QPS = -1 // no limiter
	}
	if cfg.Burst == 0 {
		cfg.Burst = max(1, int(2*cfg.QPS))
	}
	if cfg.BearerTokenFile != "" {
		// Our own token-file transport (token.go) instead of client-go's,
		// which lags a rotation by up to a minute.
		path := cfg.BearerTokenFile
		cfg.BearerToken, cfg.BearerTokenFile = "", ""
		cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper { return &tokenFile{path: path, base: rt} })
	}
	host := cfg.Host
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper { return availRT{base: rt, host: host} })
	if cfg.UserAgent == "" {
		cfg.UserAgent = "genie-kubestore"
	}
	// cfg.Timeout (if the caller set one) also ends each watch request
	// after that long; watch resumes them from the last revision.
	hc, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return nil, fmt.Errorf("connect to kubernetes %s: %w", cfg.Host, err)
	}
	dyn, err := dynamic.NewForConfigAndClient(cfg, hc)
	if err != nil {
		return nil, fmt.Errorf("connect to kubernetes %s: %w", cfg.Host, err)
	}
	s := &Store{dyn: dyn, hc: hc, cfg: cfg, scope: opts.Scope, opts: opts, beatState: beatState{beats: map[string]*coordv1.Lease{}}}
	for _, r := range allResources {
		_, err := s.dyn.Resource(r.gvr).List(ctx, metav1.ListOptions{Limit: 1})
		if apierrors.IsNotFound(err) {
			hc.CloseIdleConnections()
			return nil, fmt.Errorf("connect to kubernetes %s: resource %s.%s is not served (install deploy/crds/genie.cni.io_*.yaml): %w",
				cfg.Host, r.gvr.Resource, Group, store.ErrNotFound)
		}
		if err != nil && !apierrors.IsForbidden(err) { // forbidden: served, not for this identity
			hc.CloseIdleConnections()
			return nil, fmt.Errorf("connect to kubernetes %s: list %s: %w", cfg.Host, r.gvr.Resource, err)
		}
	}
	return s, nil
}

// Close implements store.Store: it closes idle connections (watches end
// with their contexts).
func (s *Store) Close() error {
	s.hc.CloseIdleConnections()
	return nil
}

// --- typed access through the dynamic client ---

func (s *Store) ri(r resource) dynamic.ResourceInterface { return s.dyn.Resource(r.gvr) }

func toU(o any) (*unstructured.Unstructured, error) {
	b, err := json.Marshal(o)
	if err != nil {
		return nil, err
	}
	u := &unstructured.Unstructured{}
	if err := u.UnmarshalJSON(b); err != nil {
		return nil, err
	}
	return u, nil
}

func fromU[T any](u *unstructured.Unstructured) (*T, error) {
	b, err := u.MarshalJSON()
	if err != nil {
		return nil, err
	}
	o := new(T)
	if err := json.Unmarshal(b, o); err != nil {
		return nil, fmt.Errorf("decode %s %q: %w", u.GetKind(), u.GetName(), err)
	}
	return o, nil
}

func create[T any, P interface {
	*T
	object
}](ctx context.Context, s *Store, r resource, o P) (P, error) {
	u, err := toU(o)
	if err != nil {
		return nil, err
	}
	out, err := s.ri(r).Create(ctx, u, metav1.CreateOptions{})
	if err != nil {
		return nil, err
	}
	return fromU[T](out)
}

func get[T any](ctx context.Context, s *Store, r resource, name string) (*T, error) {
	out, err := s.ri(r).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	return fromU[T](out)
}

// getOpt is get with NotFound as (nil, nil).
func getOpt[T any](ctx context.Context, s *Store, r resource, name string) (*T, error) {
	o, err := get[T](ctx, s, r, name)
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	return o, err
}

// update writes o with its resourceVersion as precondition (Conflict if
// the object changed since it was read); status writes only the status.
func update[T any, P interface {
	*T
	object
}](ctx context.Context, s *Store, r resource, o P, status bool) (P, error) {
	u, err := toU(o)
	if err != nil {
		return nil, err
	}
	var out *unstructured.Unstructured
	if status {
		out, err = s.ri(r).UpdateStatus(ctx, u, metav1.UpdateOptions{})
	} else {
		out, err = s.ri(r).Update(ctx, u, metav1.UpdateOptions{})
	}
	if err != nil {
		return nil, err
	}
	return fromU[T](out)
}

// del deletes name if it is still the object m describes: the same UID
// and, if rv is set, the same resourceVersion. NotFound is returned as is.
func (s *Store) del(ctx context.Context, r resource, m *metav1.ObjectMeta, withRV bool) error {
	uid := m.UID
	pre := &metav1.Preconditions{UID: &uid}
	if withRV {
		rv := m.ResourceVersion
		pre.ResourceVersion = &rv
	}
	return s.ri(r).Delete(ctx, m.Name, metav1.DeleteOptions{Preconditions: pre})
}

// delUID deletes name if its UID is still uid; NotFound and Conflict
// (someone else deleted or replaced it) are no error.
func (s *Store) delUID(ctx context.Context, r resource, name string, uid types.UID) error {
	err := s.ri(r).Delete(ctx, name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid}})
	if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
		return nil
	}
	return err
}

// list returns the objects matching selector (all pages, one snapshot) and
// the list's resourceVersion. limit > 0 returns at most limit objects.
func list[T any](ctx context.Context, s *Store, r resource, selector string, limit int64) ([]*T, string, error) {
	var out []*T
	opts := metav1.ListOptions{LabelSelector: selector, Limit: listPage}
	if limit > 0 && limit < listPage {
		opts.Limit = limit
	}
	rv := ""
	for {
		l, err := s.ri(r).List(ctx, opts)
		if err != nil {
			return nil, "", err
		}
		if rv == "" {
			rv = l.GetResourceVersion()
		}
		for i := range l.Items {
			o, err := fromU[T](&l.Items[i])
			if err != nil {
				return nil, "", err
			}
			out = append(out, o)
		}
		if l.GetContinue() == "" || (limit > 0 && int64(len(out)) >= limit) {
			return out, rv, nil
		}
		opts.Continue = l.GetContinue()
	}
}

// parseRV turns a resourceVersion into a store revision. Kubernetes
// documents resourceVersions as opaque; the etcd3 storage writes etcd's
// revision in decimal, and the store's revisions are only passed back to
// this store's watches.
func parseRV(rv string) (int64, error) {
	n, err := strconv.ParseInt(rv, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("resourceVersion %q is not a revision", rv)
	}
	return n, nil
}

// wrap maps an API error to the store's sentinels: "what: detail: sentinel".
func wrap(what string, err error) error {
	var sentinel error
	switch {
	case apierrors.IsNotFound(err):
		sentinel = store.ErrNotFound
	case apierrors.IsAlreadyExists(err):
		sentinel = store.ErrExists
	case apierrors.IsConflict(err):
		sentinel = store.ErrConflict
	case apierrors.IsInvalid(err), apierrors.IsBadRequest(err):
		sentinel = vpc.ErrInvalid
	case apierrors.IsServiceUnavailable(err), apierrors.IsTooManyRequests(err), apierrors.IsServerTimeout(err), apierrors.IsTimeout(err):
		// Starting up, overloaded (priority and fairness) or slow.
		sentinel = store.ErrUnavailable
	}
	if sentinel != nil {
		return fmt.Errorf("%s: %s: %w", what, apiMessage(err), sentinel)
	}
	return fmt.Errorf("%s: %w", what, err)
}

func apiMessage(err error) string {
	var se apierrors.APIStatus
	if errors.As(err, &se) {
		return se.Status().Message
	}
	return err.Error()
}

func noVPC(what, name string) error {
	return fmt.Errorf("%s: vpc %q: %w", what, name, store.ErrNotFound)
}

func noSubnet(what, v, n string) error {
	return fmt.Errorf("%s: subnet %q: %w", what, v+"/"+n, store.ErrNotFound)
}

func randomToken() string {
	b := make([]byte, 12)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// parallel runs fs concurrently and returns their errors joined.
func parallel(fs ...func() error) error {
	errs := make(chan error, len(fs))
	for _, f := range fs {
		go func() { errs <- f() }()
	}
	var all []error
	for range fs {
		all = append(all, <-errs)
	}
	return errors.Join(all...)
}

// deleteNow is an unconditional delete.
var deleteNow = metav1.DeleteOptions{}
