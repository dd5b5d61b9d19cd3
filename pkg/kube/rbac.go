package kube

import rbacv1 "k8s.io/api/rbac/v1"

// PolicyRules are the permissions a Client needs: read Pods and patch their
// network-status annotation, read NetworkAttachmentDefinitions. Deployment
// manifests grant exactly these to genie's service account; the tests run
// with exactly these, so a missing rule fails a test.
func PolicyRules() []rbacv1.PolicyRule {
	return []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get", "patch"}},
		{APIGroups: []string{"k8s.cni.cncf.io"}, Resources: []string{NADResource}, Verbs: []string{"get"}},
	}
}
