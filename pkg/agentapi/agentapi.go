package agentapi

import (
	"encoding/json"
	"fmt"

	"github.com/cni-genie/cni-genie/pkg/qos"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
)

// DefaultSocket is where genied listens unless configured otherwise.
const DefaultSocket = "/run/genie/agent.sock"

// Paths served by the agent. Every request is a POST with a JSON body.
const (
	PathAttach = "/v1/attach"
	PathDetach = "/v1/detach"
	PathCheck  = "/v1/check"
	PathGC     = "/v1/gc"
	PathStatus = "/v1/status"
)

// CNI STATUS error codes from the CNI spec (1.1) that the Go library does
// not name.
const (
	// ErrCodeNotAvailable means the plugin cannot serve ADD requests now.
	ErrCodeNotAvailable uint = 50
	// ErrCodeNotAvailableExisting means existing attachments may be affected too.
	ErrCodeNotAvailableExisting uint = 51
)

// AttachRequest asks the agent to attach a pod to one VPC subnet.
type AttachRequest struct {
	// ContainerID and IfName identify the attachment, as in CNI.
	ContainerID string `json:"containerID"`
	IfName      string `json:"ifName"`
	// Netns is the path of the pod's network namespace.
	Netns string `json:"netns"`
	// PodNamespace and PodName are informational (empty outside Kubernetes).
	PodNamespace string `json:"podNamespace,omitempty"`
	PodName      string `json:"podName,omitempty"`
	// VPC and Subnet select the network.
	VPC    string `json:"vpc"`
	Subnet string `json:"subnet"`
	// IPs optionally requests static addresses (NPWG "ips", CIDR or bare IP).
	IPs []string `json:"ips,omitempty"`
	// MAC optionally requests the pod interface's MAC (NPWG "mac").
	MAC string `json:"mac,omitempty"`
	// DefaultRoute asks for a default route via the subnet gateway.
	DefaultRoute bool `json:"defaultRoute,omitempty"`
	// DefaultNetwork says the attachment is the pod's default network
	// (the first of its networks, or the one given the default route). In
	// a VPC with DefaultNetwork set it gets what a pod's default network
	// needs (pkg/agent egress_host.go); elsewhere it changes nothing.
	DefaultNetwork bool `json:"defaultNetwork,omitempty"`
	// QoS is the attachment's class and rate limits (nil: none).
	QoS *qos.Spec `json:"qos,omitempty"`
	// Labels are the pod's labels, published on the endpoint record for
	// service selectors.
	Labels map[string]string `json:"labels,omitempty"`
}

// Validate reports the first missing field of r.
func (r *AttachRequest) Validate() error {
	switch {
	case r.ContainerID == "":
		return fmt.Errorf("attach request: containerID is empty")
	case r.IfName == "":
		return fmt.Errorf("attach request: ifName is empty")
	case r.Netns == "":
		return fmt.Errorf("attach request: netns is empty")
	case r.VPC == "":
		return fmt.Errorf("attach request: vpc is empty")
	case r.Subnet == "":
		return fmt.Errorf("attach request: subnet is empty")
	}
	return nil
}

// AttachResponse carries the CNI result (spec 1.1.0) of an attachment. The
// plugin converts it to the version the runtime asked for.
type AttachResponse struct {
	Result *current.Result `json:"result"`
}

// DetachRequest removes one attachment. Detach is idempotent: an unknown
// attachment or a vanished netns is not an error.
type DetachRequest struct {
	ContainerID string `json:"containerID"`
	IfName      string `json:"ifName"`
	Netns       string `json:"netns,omitempty"`
}

// CheckRequest asks the agent to verify an attachment is as it reported.
type CheckRequest struct {
	ContainerID string `json:"containerID"`
	IfName      string `json:"ifName"`
	Netns       string `json:"netns"`
}

// Attachment names one attachment for garbage collection.
type Attachment struct {
	ContainerID string `json:"containerID"`
	IfName      string `json:"ifName"`
}

// GCRequest lists the attachments the runtime still knows; the agent frees
// every VPC attachment (IP, endpoint, veth) not in the list.
type GCRequest struct {
	Valid []Attachment `json:"valid"`
}

// GCResponse reports what the agent freed.
type GCResponse struct {
	Freed []Attachment `json:"freed,omitempty"`
}

// StatusResponse is the agent's readiness as seen by the plugin's STATUS verb.
type StatusResponse struct {
	Ready   bool   `json:"ready"`
	Message string `json:"message,omitempty"`
}

// Error is the body of every non-2xx response: a CNI error object.
type Error = types.Error

func decodeError(body []byte, status int) error {
	var e types.Error
	if err := json.Unmarshal(body, &e); err != nil || (e.Code == 0 && e.Msg == "") {
		return &types.Error{Code: types.ErrInternal, Msg: fmt.Sprintf("agent returned HTTP %d", status), Details: string(body)}
	}
	return &e
}
