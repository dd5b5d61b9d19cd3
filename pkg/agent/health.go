package agent

import "context"

// probeReady answers the readiness probe (/readyz on the metrics address):
// the same answer as the plugin's CNI STATUS, so a pod is ready exactly
// when the agent can serve attachments.
func (a *Agent) probeReady(ctx context.Context) (bool, string) {
	st, err := a.Status(ctx)
	if err != nil {
		return false, err.Error()
	}
	return st.Ready, st.Message
}
