package sandboxtest

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// IperfClient runs an iperf3 client for secs seconds in netns (a netns
// path, entered with nsenter) against the server at ip:port and returns
// the receiver's bits/s. A refused connection (the server not listening
// yet) is retried for about 5 s. extra are more client options (e.g. "-O",
// "1": leave the first second out of the figures).
func IperfClient(ctx context.Context, netns string, ip netip.Addr, port, secs int, extra ...string) (float64, error) {
	var r struct {
		End struct {
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
		Error string `json:"error"`
	}
	for try := 0; ; try++ {
		args := append([]string{"--net=" + netns, "--", "iperf3", "-c", ip.String(),
			"-p", strconv.Itoa(port), "-t", strconv.Itoa(secs), "-J"}, extra...)
		out, err := exec.CommandContext(ctx, "nsenter", args...).Output()
		r.Error = ""
		if jerr := json.Unmarshal(out, &r); jerr != nil {
			return 0, fmt.Errorf("iperf3 client: %v: output %q", err, out)
		}
		if r.Error != "" && strings.Contains(r.Error, "connect") && try < 50 {
			time.Sleep(100 * time.Millisecond)
			continue
		}
		if r.Error != "" {
			return 0, fmt.Errorf("iperf3: %s", r.Error)
		}
		return r.End.SumReceived.BitsPerSecond, err
	}
}
