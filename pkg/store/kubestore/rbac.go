package kubestore

import rbacv1 "k8s.io/api/rbac/v1"

// PolicyRules are the permissions of the administrator's Store: geniectl
// and operators, for the ClusterRole "genie-admin" of
// deploy/policy/rbac.yaml. The conformance tests run with exactly these,
// so a missing rule fails a test.
func PolicyRules() []rbacv1.PolicyRule {
	rule := func(verbs []string, resources ...string) rbacv1.PolicyRule {
		return rbacv1.PolicyRule{APIGroups: []string{Group}, Resources: resources, Verbs: verbs}
	}
	return []rbacv1.PolicyRule{
		rule([]string{"get", "list", "watch", "create", "delete"}, "vpcs", "subnets", "ipamblocks", "vniclaims"),
		rule([]string{"update"}, "vpcs/status", "subnets/status"),
		rule([]string{"get", "list", "watch", "create", "update", "delete"}, "genienodes", "vpcendpoints", "endpointindexes"),
		rule([]string{"deletecollection"}, "endpointindexes"),
		rule([]string{"get", "list", "watch", "create", "delete"}, "vpcservices", "vpcservicevips"),
		rule([]string{"update"}, "vpcservices/status"),
		rule([]string{"get", "list", "watch", "create", "update", "delete"}, "vpcegressgateways"),
	}
}

// AgentPolicyRules are the permissions of a node agent (genied), for the
// ClusterRole "genie-agent" of deploy/policy/rbac.yaml: read the
// network (VPCs, subnets, nodes, endpoints, blocks), write its own
// GenieNode, endpoints, endpoint indexes and IPAM blocks, and assign the
// VNI of a VPC made with kubectl (create a VNIClaim, set status.vni
// once), and, when elected, write services' resolved backends
// (vpcservices/status) and hold the resolver's Lease. RBAC cannot say
// "its own": the ValidatingAdmissionPolicy genie-agent-node-scope
// (deploy/policy/agent-node-scope.yaml) refuses an agent's write to an
// object of another node, and any VPC status write but setting an unset
// VNI. Agents never create or delete VPCs, subnets or services, and never
// delete VNI claims (that would let one node give two VPCs the same VNI).
func AgentPolicyRules() []rbacv1.PolicyRule {
	rule := func(verbs []string, resources ...string) rbacv1.PolicyRule {
		return rbacv1.PolicyRule{APIGroups: []string{Group}, Resources: resources, Verbs: verbs}
	}
	return []rbacv1.PolicyRule{
		rule([]string{"get", "list", "watch"}, "vpcs", "subnets"),
		rule([]string{"get", "list", "watch", "create"}, "vniclaims"),
		rule([]string{"update"}, "vpcs/status"),
		rule([]string{"get", "list", "watch", "create", "delete"}, "ipamblocks"),
		rule([]string{"get", "list", "watch", "create", "update"}, "genienodes"),
		rule([]string{"get", "list", "watch", "create", "update", "delete"}, "vpcendpoints", "endpointindexes"),
		// Services: read them; the elected resolver writes their backends.
		rule([]string{"get", "list", "watch"}, "vpcservices", "vpcservicevips"),
		rule([]string{"update"}, "vpcservices/status"),
		// Egress gateways: read them (geniectl and operators write them).
		rule([]string{"get", "list", "watch"}, "vpcegressgateways"),
		// The resolver's leader election and the egress gateways'
		// heartbeats (Leases): see LeaseNamespace.
		{APIGroups: []string{"coordination.k8s.io"}, Resources: []string{"leases"}, Verbs: []string{"get", "list", "watch", "create", "update", "delete"}},
	}
}

// ServiceControllerPolicyRules are the permissions of `geniectl service
// controller` (pkg/service/kubesvc), for the ClusterRole
// "genie-service-controller" of deploy/policy/rbac.yaml: watch Services
// and patch their annotations, read NetworkAttachmentDefinitions, read
// the VPCs and subnets a VIP must fit, create and delete VPC services and
// their VIP claims, bump a VPC's status.services (CreateService's fence
// against subnet creations; the admission policy
// genie-service-controller-scope allows it nothing else there), and hold
// its Lease. It cannot create subnets, so a pending subnet it meets is
// left to its creator (CreateService fails and the controller retries).
func ServiceControllerPolicyRules() []rbacv1.PolicyRule {
	rule := func(verbs []string, resources ...string) rbacv1.PolicyRule {
		return rbacv1.PolicyRule{APIGroups: []string{Group}, Resources: resources, Verbs: verbs}
	}
	return []rbacv1.PolicyRule{
		rule([]string{"get", "list", "watch"}, "vpcs", "subnets"),
		rule([]string{"update"}, "vpcs/status"),
		rule([]string{"get", "list", "watch", "create", "delete"}, "vpcservices", "vpcservicevips"),
		{APIGroups: []string{""}, Resources: []string{"services"}, Verbs: []string{"get", "list", "watch", "patch"}},
		{APIGroups: []string{"k8s.cni.cncf.io"}, Resources: []string{"network-attachment-definitions"}, Verbs: []string{"get"}},
		{APIGroups: []string{"coordination.k8s.io"}, Resources: []string{"leases"}, Verbs: []string{"get", "create", "update"}},
	}
}

// ServiceControllerAccount is the service account name of the service
// controller (any namespace), which the admission policy
// genie-service-controller-scope recognises.
const ServiceControllerAccount = "genie-service-controller"

// AgentServiceAccount is the name the node-scope admission policy
// recognises a node agent's service account by (in any namespace):
// system:serviceaccount:<namespace>:genie-agent, with a token bound to
// its pod or node, which carries the node's name.
const AgentServiceAccount = "genie-agent"

// AgentUserPrefix is the user-name prefix of a per-node agent identity
// outside service accounts (a client certificate or static token for
// user "genie:node:<node>"), recognised by the same policy.
const AgentUserPrefix = "genie:node:"
