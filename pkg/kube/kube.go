package kube

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"syscall"
	"time"

	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// DefaultTimeout bounds every API request made by a Client whose context has
// no earlier deadline. A CNI invocation must not hang on an unreachable API
// server.
const DefaultTimeout = 10 * time.Second

// NetworkStatusAnnotation is the NPWG annotation genie writes on a Pod.
const NetworkStatusAnnotation = nadv1.NetworkStatusAnnot

// NetworksAnnotation is the NPWG annotation a Pod selects its networks with.
const NetworksAnnotation = nadv1.NetworkAttachmentAnnot

// NADResource is the plural resource name of NetworkAttachmentDefinitions.
const NADResource = "network-attachment-definitions"

// UserAgent is sent with every request, so API server audit logs name genie.
const UserAgent = "genie-cni"

// metadataOnly asks the API server for a Pod's metadata alone (a
// meta.k8s.io/v1 PartialObjectMetadata, as client-go's metadata client
// does), falling back to the full object; either decodes into
// PartialObjectMetadata.
const metadataOnly = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1,application/json"

// coreV1 is the core API group version; podsResource its pods.
var (
	coreV1       = schema.GroupVersion{Version: "v1"}
	podsResource = coreV1.WithResource("pods").GroupResource()
)

// ErrUnavailable marks errors where the API server could not be reached or did
// not answer in time. DEL tolerates them.
var ErrUnavailable = errors.New("kubernetes api server unavailable")

// Client reads a pod's network selection and writes back network-status.
// It is created per CNI invocation from the kubeconfig file on disk, so a
// rotated token works.
type Client struct {
	kubeconfig string
	pods       rest.Interface
	nads       rest.Interface
}

// NewFromKubeconfig builds a Client from the kubeconfig file at path, read
// now. It does not contact the API server.
func NewFromKubeconfig(path string) (*Client, error) {
	if path == "" {
		return nil, errors.New("kubeconfig path is empty")
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", path)
	if err != nil {
		return nil, fmt.Errorf("load kubeconfig %q: %w", path, err)
	}
	c, err := NewFromConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubeconfig %q: %w", path, err)
	}
	c.kubeconfig = path
	return c, nil
}

// NewFromConfig builds a Client from a rest.Config. The config is copied;
// its Timeout is capped at DefaultTimeout.
func NewFromConfig(cfg *rest.Config) (*Client, error) {
	cfg = rest.CopyConfig(cfg)
	if cfg.Timeout == 0 || cfg.Timeout > DefaultTimeout {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.UserAgent == "" {
		cfg.UserAgent = UserAgent
	}
	// One short-lived process makes a handful of requests: client-side
	// throttling would only add latency (a QPS-50 limiter cost a reused
	// client 4x in BenchmarkInvocation). A negative QPS disables it; the
	// API server's priority and fairness still protects the server.
	cfg.QPS, cfg.Burst = -1, 0

	scheme := runtime.NewScheme()
	if err := nadv1.AddToScheme(scheme); err != nil {
		return nil, fmt.Errorf("register nad types: %w", err)
	}
	// Pods are read and patched as metadata only, so core/v1's types (a
	// large package, initialised at every genie start) are not linked; the
	// scheme needs only the v1 Status kind, to decode API errors.
	metav1.AddToGroupVersion(scheme, coreV1)
	pc := rest.CopyConfig(cfg)
	pc.GroupVersion = &coreV1
	pc.APIPath = "/api"
	pc.ContentType = runtime.ContentTypeJSON
	pc.AcceptContentTypes = runtime.ContentTypeJSON
	pc.NegotiatedSerializer = serializer.NewCodecFactory(scheme).WithoutConversion()
	pods, err := rest.RESTClientFor(pc)
	if err != nil {
		return nil, fmt.Errorf("create pod client: %w", err)
	}
	nc := rest.CopyConfig(cfg)
	nc.GroupVersion = &nadv1.SchemeGroupVersion
	nc.APIPath = "/apis"
	nc.ContentType = runtime.ContentTypeJSON
	nc.AcceptContentTypes = runtime.ContentTypeJSON
	nc.NegotiatedSerializer = serializer.NewCodecFactory(scheme).WithoutConversion()
	nads, err := rest.RESTClientFor(nc)
	if err != nil {
		return nil, fmt.Errorf("create nad client: %w", err)
	}
	return &Client{pods: pods, nads: nads}, nil
}

// GetPod reads the metadata (name, UID, annotations, ...) of the Pod
// namespace/name: all genie needs of it.
func (c *Client) GetPod(ctx context.Context, namespace, name string) (*metav1.PartialObjectMetadata, error) {
	ctx, cancel := bounded(ctx)
	defer cancel()
	raw, err := c.pods.Get().Namespace(namespace).Resource("pods").Name(name).
		SetHeader("Accept", metadataOnly).Do(ctx).Raw()
	if err != nil {
		return nil, c.wrap(err, "get pod %s/%s", namespace, name)
	}
	pod := &metav1.PartialObjectMetadata{}
	if err := json.Unmarshal(raw, pod); err != nil {
		return nil, fmt.Errorf("get pod %s/%s: decode: %w", namespace, name, err)
	}
	if pod.Name == "" {
		return nil, fmt.Errorf("get pod %s/%s: decode: answer has no metadata.name", namespace, name)
	}
	return pod, nil
}

// GetNAD reads the NetworkAttachmentDefinition namespace/name. The caller
// resolves the namespace (the selection element's, else the Pod's).
func (c *Client) GetNAD(ctx context.Context, namespace, name string) (*nadv1.NetworkAttachmentDefinition, error) {
	ctx, cancel := bounded(ctx)
	defer cancel()
	nad := &nadv1.NetworkAttachmentDefinition{}
	err := c.nads.Get().Namespace(namespace).Resource(NADResource).Name(name).Do(ctx).Into(nad)
	if err != nil {
		return nil, c.wrap(err, "get network-attachment-definition %s/%s", namespace, name)
	}
	return nad, nil
}

// SetNetworkStatus writes st as the Pod's k8s.v1.cni.cncf.io/network-status
// annotation, leaving every other field alone. A Pod that is gone yields an
// error for which IsNotFound is true.
func (c *Client) SetNetworkStatus(ctx context.Context, namespace, name string, st []nadv1.NetworkStatus) error {
	return c.SetNetworkStatusForUID(ctx, namespace, name, "", st)
}

// SetNetworkStatusForUID is SetNetworkStatus with a precondition: when uid is
// not empty, the write only lands on the Pod with that UID. A Pod of the same
// name but another UID (deleted and re-created) yields an error for which
// IsNotFound is true, because the Pod the status belongs to is gone.
func (c *Client) SetNetworkStatusForUID(ctx context.Context, namespace, name string, uid types.UID, st []nadv1.NetworkStatus) error {
	if st == nil {
		st = []nadv1.NetworkStatus{}
	}
	value, err := json.Marshal(st)
	if err != nil {
		return fmt.Errorf("set network-status on pod %s/%s: encode: %w", namespace, name, err)
	}
	meta := map[string]any{
		"annotations": map[string]string{NetworkStatusAnnotation: string(value)},
	}
	if uid != "" {
		meta["uid"] = uid
	}
	patch, err := json.Marshal(map[string]any{"metadata": meta})
	if err != nil {
		return fmt.Errorf("set network-status on pod %s/%s: encode patch: %w", namespace, name, err)
	}

	ctx, cancel := bounded(ctx)
	defer cancel()
	backoff := wait.Backoff{Duration: 50 * time.Millisecond, Factor: 2, Jitter: 0.2, Steps: 6}
	var lastErr error
	werr := wait.ExponentialBackoffWithContext(ctx, backoff, func(ctx context.Context) (bool, error) {
		lastErr = c.pods.Patch(types.MergePatchType).Namespace(namespace).Resource("pods").Name(name).
			SetHeader("Accept", metadataOnly).Body(patch).Do(ctx).Error()
		switch {
		case lastErr == nil:
			return true, nil
		case apierrors.IsConflict(lastErr), apierrors.IsServerTimeout(lastErr),
			apierrors.IsTooManyRequests(lastErr), apierrors.IsInternalError(lastErr):
			return false, nil // retry
		default:
			return false, lastErr
		}
	})
	if werr == nil {
		return nil
	}
	if lastErr == nil {
		lastErr = werr
	}
	if uid != "" && uidMismatch(lastErr) {
		// The UID is immutable: a mismatch means the Pod was re-created.
		gone := apierrors.NewNotFound(podsResource, name)
		return fmt.Errorf("set network-status on pod %s/%s: pod with uid %s is gone (%v): %w",
			namespace, name, uid, lastErr, gone)
	}
	return c.wrap(lastErr, "set network-status on pod %s/%s", namespace, name)
}

// uidMismatch reports whether err is the API server refusing a patch whose
// metadata.uid differs from the stored Pod's (the field is immutable).
func uidMismatch(err error) bool {
	var st apierrors.APIStatus
	if !apierrors.IsInvalid(err) || !errors.As(err, &st) || st.Status().Details == nil {
		return false
	}
	for _, c := range st.Status().Details.Causes {
		if c.Field == "metadata.uid" {
			return true
		}
	}
	return false
}

// IsNotFound reports whether err says the object (Pod or NAD) does not exist.
func IsNotFound(err error) bool { return apierrors.IsNotFound(err) }

// IsUnauthorized reports whether err says the API server rejected the
// credentials (expired, revoked or unknown token).
func IsUnauthorized(err error) bool { return apierrors.IsUnauthorized(err) }

// IsUnavailable reports whether err says the API server could not be reached
// or did not answer in time.
func IsUnavailable(err error) bool { return errors.Is(err, ErrUnavailable) }

func (c *Client) wrap(err error, format string, args ...any) error {
	what := fmt.Sprintf(format, args...)
	switch {
	case apierrors.IsUnauthorized(err):
		src := "the client credentials"
		if c.kubeconfig != "" {
			src = fmt.Sprintf("the credentials in kubeconfig %q", c.kubeconfig)
		}
		return fmt.Errorf("%s: api server rejected %s (token expired, revoked or unknown): %w", what, src, err)
	case apierrors.IsForbidden(err):
		return fmt.Errorf("%s: not permitted (check genie's RBAC): %w", what, err)
	case badCertificate(err):
		return fmt.Errorf("%s: api server certificate not trusted (check certificate-authority in the kubeconfig): %w", what, err)
	case unreachable(err):
		return fmt.Errorf("%s: %w: %w", what, ErrUnavailable, err)
	}
	return fmt.Errorf("%s: %w", what, err)
}

// badCertificate reports whether err is a TLS verification failure: a
// configuration error, not an outage.
func badCertificate(err error) bool {
	var (
		verr *tls.CertificateVerificationError
		uerr x509.UnknownAuthorityError
		herr x509.HostnameError
		cerr x509.CertificateInvalidError
	)
	return errors.As(err, &verr) || errors.As(err, &uerr) || errors.As(err, &herr) || errors.As(err, &cerr)
}

// unreachable reports whether err is a transport failure or a timeout rather
// than an answer from the API server.
func unreachable(err error) bool {
	var st apierrors.APIStatus
	if errors.As(err, &st) {
		return apierrors.IsTimeout(err) || apierrors.IsServerTimeout(err) || apierrors.IsServiceUnavailable(err)
	}
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, syscall.ECONNREFUSED) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EHOSTUNREACH) ||
		errors.Is(err, syscall.ENETUNREACH) || errors.As(err, &ne)
}

// bounded gives ctx a DefaultTimeout deadline unless it has an earlier one.
func bounded(ctx context.Context) (context.Context, context.CancelFunc) {
	if d, ok := ctx.Deadline(); ok && time.Until(d) <= DefaultTimeout {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, DefaultTimeout)
}
