package install

import (
	"context"
	"fmt"
	"sync"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// TokenRequester issues tokens for the plugin's service account through the
// TokenRequest API, bound to the node: the plugin gets only its own, narrow
// role (read pods and NADs, patch pod annotations), not the agent's; the
// token dies with the Node object, and the API server records the node's
// name in the token's user info, which the chart's admission policy uses to
// keep the plugin's writes on its own node. (A token for another service
// account cannot be bound to the installer's pod.) A token is reused until
// RefreshFraction of its lifetime has passed.
type TokenRequester struct {
	// Client is the installer's client (the agent's service account,
	// allowed to create tokens for ServiceAccount only).
	Client kubernetes.Interface
	// Namespace and ServiceAccount name the plugin's service account.
	Namespace, ServiceAccount string
	// NodeName binds the token to that Node (empty: unbound).
	NodeName string
	// Expiration is the requested lifetime (default 1h; the API server
	// may shorten or extend it).
	Expiration time.Duration
	// RefreshFraction of the lifetime after which a new token is asked
	// for (default 0.5).
	RefreshFraction float64
	// Now is the clock (tests); nil: time.Now.
	Now func() time.Time

	mu      sync.Mutex
	token   string
	refresh time.Time
}

// Token returns a valid token, requesting a new one when due.
func (r *TokenRequester) Token(ctx context.Context) (string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now
	if r.Now != nil {
		now = r.Now
	}
	if r.token != "" && now().Before(r.refresh) {
		return r.token, nil
	}
	exp := r.Expiration
	if exp <= 0 {
		exp = time.Hour
	}
	secs := int64(exp / time.Second)
	tr := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &secs}}
	if r.NodeName != "" {
		tr.Spec.BoundObjectRef = &authenticationv1.BoundObjectReference{Kind: "Node", APIVersion: "v1", Name: r.NodeName}
	}
	issued := now()
	out, err := r.Client.CoreV1().ServiceAccounts(r.Namespace).CreateToken(ctx, r.ServiceAccount, tr, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("request token for %s/%s: %w", r.Namespace, r.ServiceAccount, err)
	}
	frac := r.RefreshFraction
	if frac <= 0 || frac >= 1 {
		frac = 0.5
	}
	life := out.Status.ExpirationTimestamp.Sub(issued)
	if life <= 0 {
		life = exp
	}
	r.token = out.Status.Token
	r.refresh = issued.Add(time.Duration(float64(life) * frac))
	return r.token, nil
}
