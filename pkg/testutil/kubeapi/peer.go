package kubeapi

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"time"
)

// Peer is a second kube-apiserver serving the same etcd, certificates and
// tokens as its Server: with the Server's own API server it forms an HA
// pair, as behind a real cluster's load balancer, so a test can restart
// one member while clients fail over to the other.
type Peer struct {
	// URL is the peer's base URL, https://127.0.0.1:<port>.
	URL string
	p   *proc
}

// StartPeer starts a peer and waits for its /readyz. Stop it with
// Peer.Stop (it also dies with the test binary).
func (s *Server) StartPeer(ctx context.Context) (*Peer, error) {
	ports, err := freePorts(1)
	if err != nil {
		return nil, fmt.Errorf("start kube-apiserver peer: %w", err)
	}
	args := s.apiServerArgs()
	for i := range args {
		if args[i] == "--secure-port" && i+1 < len(args) {
			args[i+1] = strconv.Itoa(ports[0])
		}
	}
	p, err := s.spawnAs("kube-apiserver", "kube-apiserver-peer-"+strconv.Itoa(ports[0]), args)
	if err != nil {
		return nil, fmt.Errorf("start kube-apiserver peer: %w", err)
	}
	peer := &Peer{URL: "https://127.0.0.1:" + strconv.Itoa(ports[0]), p: p}
	hc, err := s.httpClient()
	if err != nil {
		p.kill()
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, s.opts.StartTimeout)
	defer cancel()
	begin := time.Now()
	err = poll(ctx, p, func() bool {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, peer.URL+"/readyz", nil)
		req.Header.Set("Authorization", "Bearer "+s.AdminToken)
		resp, err := hc.Do(req)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	if err != nil {
		p.kill()
		return nil, s.startupError("kube-apiserver peer", p, err)
	}
	s.opts.Logf("kubeapi: kube-apiserver peer ready at %s in %v", peer.URL, time.Since(begin).Round(time.Millisecond))
	return peer, nil
}

// Stop stops the peer (SIGTERM, then SIGKILL) and waits for it.
func (p *Peer) Stop() { p.p.kill() }
