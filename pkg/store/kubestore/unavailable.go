package kubestore

import (
	"fmt"
	"net/http"

	"github.com/cni-genie/cni-genie/pkg/store"
)

// availRT marks every request that got no HTTP answer at all (connection
// refused or reset, no route, the caller's deadline while waiting) as
// store.ErrUnavailable, naming the API server, so the agent can tell "the
// store is down, try again later" from a refusal by the store's rules.
// client-go keeps the error as the cause of its *url.Error, so errors.Is
// sees it, and its own retry checks (connection reset, EOF) still match
// the wrapped cause.
type availRT struct {
	base http.RoundTripper
	host string
}

func (t availRT) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := t.base.RoundTrip(r)
	if err != nil {
		return nil, fmt.Errorf("kubernetes API server %s: %w: %w", t.host, store.ErrUnavailable, err)
	}
	return resp, nil
}
