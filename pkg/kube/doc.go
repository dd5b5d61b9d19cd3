// Package kube is everything the genie CNI plugin needs from the Kubernetes
// API: read a Pod's network selection, resolve NetworkAttachmentDefinitions
// and write back the NPWG network-status annotation.
//
// # Design notes
//
// A Client is built per CNI invocation from the kubeconfig file on disk
// (NewFromKubeconfig) and never cached across invocations. The kubeconfig is
// rewritten by the node agent or the installer when its service-account token
// is rotated; reading it on every call means a rotated token takes effect on
// the next ADD or DEL, with no stale credential held in a long-lived process.
// This avoids the Multus failure mode where an expired projected token keeps
// every pod on the node from starting. A rejected credential is reported as
// such (IsUnauthorized) with the kubeconfig path in the message.
//
// Every call is bounded: each request carries DefaultTimeout unless the
// caller's context already has an earlier deadline, so a CNI invocation never
// hangs on an unreachable API server. DEL must not depend on the API server at
// all; the caller tolerates errors for which IsNotFound or IsUnavailable is
// true.
//
// Pods go through a client-go REST client on core v1 that asks for metadata
// only (PartialObjectMetadata, as client-go's metadata client does): genie
// needs a Pod's annotations and UID, never its spec, so the answer is small
// and k8s.io/api/core/v1 is not linked into the genie binary (its package
// initialisation and size cost every CNI call, DEL included, about 0.1-0.2
// ms). NetworkAttachmentDefinitions go through a REST client on
// k8s.cni.cncf.io/v1 with the NPWG Go types registered in a private scheme,
// so no generated NAD clientset (and no second set of Kubernetes module
// versions) is needed.
//
// The network-status annotation is written with a JSON merge patch that
// touches only that one annotation key, so it never overwrites concurrent
// changes to other fields. When the caller knows the Pod UID (kubelet passes
// K8S_POD_UID in CNI_ARGS), the patch carries it as a precondition, so the
// status of a deleted sandbox is never written onto a new Pod that reuses the
// name. Scale: one GET per referenced NAD and one GET plus one PATCH per pod
// ADD; nothing is watched or cached.
package kube
