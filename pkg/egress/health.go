package egress

// Health says which nodes are alive, for choosing gateways. It is small on
// purpose so that the directory's memberlist (package directory), once the
// agent runs it, can stand in for the store heartbeats the agent uses
// today (egressagent.Heartbeats): both answer "is this node alive now"
// and signal when the answer may have changed.
type Health interface {
	// Alive reports whether node is alive now.
	Alive(node string) bool
	// Changed receives a value (non-blocking, coalesced) whenever Alive
	// may have changed for some node.
	Changed() <-chan struct{}
}
