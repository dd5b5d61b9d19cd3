package kubestore

import rbacv1 "k8s.io/api/rbac/v1"

// PolicyRules are the permissions a Store needs, for the ClusterRole of
// the agents and of geniectl. The conformance tests run with exactly
// these, so a missing rule fails a test.
//
// The agents need everything but the create and delete of VPCs and
// subnets; one role for both is simpler to deploy while the CLI is the
// only other writer (a read-only "view" role would need no more than
// get/list/watch, except that reading a VPC made with kubectl assigns
// its VNI).
func PolicyRules() []rbacv1.PolicyRule {
	rule := func(verbs []string, resources ...string) rbacv1.PolicyRule {
		return rbacv1.PolicyRule{APIGroups: []string{Group}, Resources: resources, Verbs: verbs}
	}
	return []rbacv1.PolicyRule{
		rule([]string{"get", "list", "watch", "create", "delete"}, "vpcs", "subnets", "ipamblocks", "vniclaims"),
		rule([]string{"update"}, "vpcs/status", "subnets/status"),
		rule([]string{"get", "list", "watch", "create", "update", "delete"}, "genienodes", "vpcendpoints", "endpointindexes"),
		rule([]string{"deletecollection"}, "endpointindexes"),
	}
}
