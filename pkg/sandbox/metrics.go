package sandbox

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Metrics scrapes the node's genied /metrics (served inside the node's
// namespace) and returns every sample as "name{labels}" -> value.
func (s *Sandbox) Metrics(ctx context.Context, node string) (map[string]float64, error) {
	out := map[string]float64{}
	err := s.agentGet(ctx, node, "/metrics", func(r io.Reader) error {
		sc := bufio.NewScanner(r)
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
		return sc.Err()
	})
	return out, err
}

// AgentHeapProfile writes the node's genied heap profile (pprof format)
// to w; the agent must run with --pprof (Options.AgentArgs).
func (s *Sandbox) AgentHeapProfile(ctx context.Context, node string, w io.Writer) error {
	return s.agentGet(ctx, node, "/debug/pprof/heap", func(r io.Reader) error {
		_, err := io.Copy(w, r)
		return err
	})
}

// agentGet GETs path from the node's genied metrics address (inside the
// node's namespace) and hands a 200 answer's body to read.
func (s *Sandbox) agentGet(ctx context.Context, node, path string, read func(io.Reader) error) error {
	n, err := s.Node(node)
	if err != nil {
		return err
	}
	tr := &http.Transport{DisableKeepAlives: true,
		DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
			return DialTCP(ctx, Endpoint{Netns: n.Netns}, addr)
		}}
	cli := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+AgentMetricsAddr+path, nil)
	if err != nil {
		return err
	}
	resp, err := cli.Do(req)
	if err != nil {
		return fmt.Errorf("node %s: GET %s: %w", n.Name, path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("node %s: GET %s: HTTP %d", n.Name, path, resp.StatusCode)
	}
	return read(resp.Body)
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
