package agent

import (
	"context"
	"fmt"
	"testing"

	"github.com/cni-genie/cni-genie/pkg/store"
	"github.com/cni-genie/cni-genie/pkg/vpc"
	"github.com/containernetworking/cni/pkg/types"
)

// Store failures that a retry may not have are "try again later" (11);
// refusals by the store's rules are a config error (7).
func TestCodeFor(t *testing.T) {
	for _, c := range []struct {
		err  error
		want uint
	}{
		{fmt.Errorf("put endpoint: etcd unix:///x: %w: context deadline exceeded", store.ErrUnavailable), types.ErrTryAgainLater},
		{fmt.Errorf("claim block: gave up after 33 attempts: %w", store.ErrBusy), types.ErrTryAgainLater},
		{fmt.Errorf("get vpc: %w", context.DeadlineExceeded), types.ErrTryAgainLater},
		{fmt.Errorf("put endpoint: ip held: %w", store.ErrConflict), types.ErrInvalidNetworkConfig},
		{fmt.Errorf("get vpc: %w", store.ErrNotFound), types.ErrInvalidNetworkConfig},
		{fmt.Errorf("subnet: %w: %w", vpc.ErrInvalid, store.ErrConflict), types.ErrInvalidNetworkConfig},
	} {
		if got := codeFor(c.err); got != c.want {
			t.Errorf("codeFor(%v) = %d, want %d", c.err, got, c.want)
		}
	}
}
