package kubeapi

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
)

// PolicyDir is <module root>/deploy/policy: the project's RBAC roles and
// admission policies.
func PolicyDir() (string, error) {
	root, err := ModuleRoot()
	if err != nil {
		return "", err
	}
	return filepath.Join(root, "deploy", "policy"), nil
}

// ReadObjects decodes every document of a YAML file into typed objects of
// client-go's scheme (RBAC, admission policies, core objects, ...).
func ReadObjects(path string) ([]runtime.Object, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out []runtime.Object
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	for {
		doc, err := r.Read()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return out, nil
			}
			return nil, fmt.Errorf("read %s: %w", path, err)
		}
		if len(bytes.TrimSpace(doc)) == 0 {
			continue
		}
		obj, _, err := scheme.Codecs.UniversalDeserializer().Decode(doc, nil, nil)
		if err != nil {
			return nil, fmt.Errorf("decode %s: %w", path, err)
		}
		out = append(out, obj)
	}
}

// InstallPolicies creates or replaces the ClusterRoles, ValidatingAdmission
// Policies and their bindings of the named files of deploy/policy (all
// files when none is named). A policy takes effect a moment after it is
// created: callers that depend on it probe until it refuses.
func (s *Server) InstallPolicies(ctx context.Context, files ...string) error {
	dir, err := PolicyDir()
	if err != nil {
		return err
	}
	if len(files) == 0 {
		m, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
		if err != nil {
			return err
		}
		for _, p := range m {
			files = append(files, filepath.Base(p))
		}
	}
	cs, err := kubernetes.NewForConfig(s.RESTConfig())
	if err != nil {
		return err
	}
	for _, f := range files {
		objs, err := ReadObjects(filepath.Join(dir, f))
		if err != nil {
			return err
		}
		for _, o := range objs {
			if err := apply(ctx, cs, o); err != nil {
				return fmt.Errorf("install %s: %w", f, err)
			}
		}
	}
	return nil
}

func apply(ctx context.Context, cs *kubernetes.Clientset, o runtime.Object) error {
	switch o := o.(type) {
	case *rbacv1.ClusterRole:
		return createOrUpdate(ctx, o, cs.RbacV1().ClusterRoles())
	case *admissionv1.ValidatingAdmissionPolicy:
		return createOrUpdate(ctx, o, cs.AdmissionregistrationV1().ValidatingAdmissionPolicies())
	case *admissionv1.ValidatingAdmissionPolicyBinding:
		return createOrUpdate(ctx, o, cs.AdmissionregistrationV1().ValidatingAdmissionPolicyBindings())
	}
	return fmt.Errorf("unsupported object %T", o)
}

type namedObject interface {
	runtime.Object
	GetName() string
	GetResourceVersion() string
	SetResourceVersion(string)
}

type client[T namedObject] interface {
	Create(context.Context, T, metav1.CreateOptions) (T, error)
	Update(context.Context, T, metav1.UpdateOptions) (T, error)
	Get(context.Context, string, metav1.GetOptions) (T, error)
}

func createOrUpdate[T namedObject](ctx context.Context, o T, c client[T]) error {
	_, err := c.Create(ctx, o, metav1.CreateOptions{})
	if !apierrors.IsAlreadyExists(err) {
		return err
	}
	cur, err := c.Get(ctx, o.GetName(), metav1.GetOptions{})
	if err != nil {
		return err
	}
	o.SetResourceVersion(cur.GetResourceVersion())
	_, err = c.Update(ctx, o, metav1.UpdateOptions{})
	return err
}
