package agentapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
)

// ErrAgentUnavailable is wrapped when the agent's socket cannot be reached.
var ErrAgentUnavailable = errors.New("node agent unavailable")

// Client talks to genied over its unix socket.
type Client struct {
	socket string
	http   *http.Client
}

// NewClient returns a client for the agent listening on socket. timeout
// bounds each request (0 means 30s): a CNI call must never hang.
func NewClient(socket string, timeout time.Duration) *Client {
	if socket == "" {
		socket = DefaultSocket
	}
	if timeout == 0 {
		timeout = 30 * time.Second
	}
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
		DisableKeepAlives: true,
	}
	return &Client{socket: socket, http: &http.Client{Transport: tr, Timeout: timeout}}
}

// Attach asks the agent for a VPC attachment and returns its CNI result.
func (c *Client) Attach(ctx context.Context, req *AttachRequest) (*current.Result, error) {
	if err := req.Validate(); err != nil {
		return nil, &types.Error{Code: types.ErrInvalidNetworkConfig, Msg: err.Error()}
	}
	var resp AttachResponse
	if err := c.call(ctx, PathAttach, req, &resp); err != nil {
		return nil, err
	}
	if resp.Result == nil {
		return nil, &types.Error{Code: types.ErrInternal, Msg: "agent returned no result for attach"}
	}
	return resp.Result, nil
}

// Detach removes an attachment; it is idempotent.
func (c *Client) Detach(ctx context.Context, req *DetachRequest) error {
	return c.call(ctx, PathDetach, req, nil)
}

// Check verifies an attachment.
func (c *Client) Check(ctx context.Context, req *CheckRequest) error {
	return c.call(ctx, PathCheck, req, nil)
}

// GC frees VPC attachments not listed in req.Valid.
func (c *Client) GC(ctx context.Context, req *GCRequest) (*GCResponse, error) {
	var resp GCResponse
	if err := c.call(ctx, PathGC, req, &resp); err != nil {
		return nil, err
	}
	return &resp, nil
}

// Status reports whether the agent is ready to serve attachments.
func (c *Client) Status(ctx context.Context) (*StatusResponse, error) {
	var resp StatusResponse
	if err := c.call(ctx, PathStatus, struct{}{}, &resp); err != nil {
		return nil, err
	}
	return &resp, nil
}

func (c *Client) call(ctx context.Context, path string, in, out any) error {
	body, err := json.Marshal(in)
	if err != nil {
		return fmt.Errorf("encoding %s request: %w", path, err)
	}
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://genied"+path, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("building %s request: %w", path, err)
	}
	hreq.Header.Set("Content-Type", "application/json")
	hresp, err := c.http.Do(hreq)
	if err != nil {
		// CNI code 11 ("try again later"): the agent may be restarting.
		return &types.Error{Code: types.ErrTryAgainLater,
			Msg:     fmt.Sprintf("%v at %s", ErrAgentUnavailable, c.socket),
			Details: err.Error()}
	}
	defer hresp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(hresp.Body, 4<<20))
	if err != nil {
		return fmt.Errorf("reading %s response: %w", path, err)
	}
	if hresp.StatusCode/100 != 2 {
		return decodeError(data, hresp.StatusCode)
	}
	if out == nil || len(data) == 0 {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("decoding %s response: %w", path, err)
	}
	return nil
}
