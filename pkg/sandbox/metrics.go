package sandbox

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Metrics scrapes the node's genied /metrics (served inside the node's
// namespace) and returns every sample as "name{labels}" -> value.
func (s *Sandbox) Metrics(ctx context.Context, node string) (map[string]float64, error) {
	n, err := s.Node(node)
	if err != nil {
		return nil, err
	}
	tr := &http.Transport{DisableKeepAlives: true,
		DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
			return DialTCP(ctx, Endpoint{Netns: n.Netns}, addr)
		}}
	cli := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+AgentMetricsAddr+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := cli.Do(req)
	if err != nil {
		return nil, fmt.Errorf("node %s: metrics: %w", n.Name, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("node %s: metrics: HTTP %d", n.Name, resp.StatusCode)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		out[line[:i]] = v
	}
	return out, sc.Err()
}

// Drops returns the node data plane's drop counter for reason (e.g.
// "SPOOFED_IP"), from genied's genie_datapath_drops_total.
func (s *Sandbox) Drops(ctx context.Context, node, reason string) (float64, error) {
	m, err := s.Metrics(ctx, node)
	if err != nil {
		return 0, err
	}
	return m[fmt.Sprintf("genie_datapath_drops_total{reason=%q}", reason)], nil
}
