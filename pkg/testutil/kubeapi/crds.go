package kubeapi

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	apiextv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apiextclient "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/rest"
)

// CRDDir is <module root>/deploy/crds, where the project's CRDs live.
func CRDDir() (string, error) {
	root, err := ModuleRoot()
	if err != nil {
		return "", err
	}
	return filepath.Join(root, "deploy", "crds"), nil
}

// NADCRDFile is the NetworkAttachmentDefinition CRD's file in deploy/crds.
const NADCRDFile = "network-attachment-definition.yaml"

// InstallProjectCRDs installs CRDs from deploy/crds and waits until each is
// Established and served: the named files, or every file when none is named.
// Tests install only the CRDs they use, so one broken file elsewhere in
// deploy/crds fails only the tests that need it (and TestInstallProjectCRDs,
// which installs them all).
func (s *Server) InstallProjectCRDs(ctx context.Context, files ...string) error {
	dir, err := CRDDir()
	if err != nil {
		return err
	}
	paths := []string{dir}
	if len(files) > 0 {
		paths = paths[:0]
		for _, f := range files {
			paths = append(paths, filepath.Join(dir, f))
		}
	}
	_, err = InstallCRDs(ctx, s.RESTConfig(), paths...)
	return err
}

// InstallCRDs creates (or updates) the CustomResourceDefinitions found in the
// YAML files at paths (files, or directories whose *.yaml/*.yml files are
// read; a file may hold several documents) and waits until each is
// Established and its resource is listed by discovery. Safe to call from
// several tests at once.
func InstallCRDs(ctx context.Context, cfg *rest.Config, paths ...string) ([]*apiextv1.CustomResourceDefinition, error) {
	crds, err := ReadCRDs(paths...)
	if err != nil {
		return nil, err
	}
	cs, err := apiextclient.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("install crds: %w", err)
	}
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("install crds: %w", err)
	}
	api := cs.ApiextensionsV1().CustomResourceDefinitions()
	for _, crd := range crds {
		_, err := api.Create(ctx, crd, metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) {
			err = updateCRD(ctx, cs, crd)
		}
		if err != nil {
			return nil, fmt.Errorf("install crd %s: %w", crd.Name, err)
		}
	}
	var out []*apiextv1.CustomResourceDefinition
	for _, crd := range crds {
		var got *apiextv1.CustomResourceDefinition
		err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
			got, err = api.Get(ctx, crd.Name, metav1.GetOptions{})
			if err != nil {
				return false, err
			}
			if !established(got) {
				return false, nil
			}
			return served(dc, got), nil
		})
		if err != nil {
			return nil, fmt.Errorf("wait for crd %s established: %w", crd.Name, err)
		}
		out = append(out, got)
	}
	return out, nil
}

func updateCRD(ctx context.Context, cs apiextclient.Interface, crd *apiextv1.CustomResourceDefinition) error {
	api := cs.ApiextensionsV1().CustomResourceDefinitions()
	for range 5 {
		cur, err := api.Get(ctx, crd.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		next := crd.DeepCopy()
		next.ResourceVersion = cur.ResourceVersion
		_, err = api.Update(ctx, next, metav1.UpdateOptions{})
		if !apierrors.IsConflict(err) {
			return err
		}
	}
	return errors.New("update kept conflicting")
}

func established(crd *apiextv1.CustomResourceDefinition) bool {
	var est, names bool
	for _, c := range crd.Status.Conditions {
		switch c.Type {
		case apiextv1.Established:
			est = c.Status == apiextv1.ConditionTrue
		case apiextv1.NamesAccepted:
			names = c.Status == apiextv1.ConditionTrue
		}
	}
	return est && names
}

// served reports whether discovery lists the CRD's resource in every served
// version, i.e. requests for it will be routed.
func served(dc discovery.DiscoveryInterface, crd *apiextv1.CustomResourceDefinition) bool {
	for _, v := range crd.Spec.Versions {
		if !v.Served {
			continue
		}
		list, err := dc.ServerResourcesForGroupVersion(crd.Spec.Group + "/" + v.Name)
		if err != nil {
			return false
		}
		if !slices.ContainsFunc(list.APIResources, func(r metav1.APIResource) bool { return r.Name == crd.Spec.Names.Plural }) {
			return false
		}
	}
	return true
}

// ReadCRDs decodes the CustomResourceDefinitions in the YAML files at paths
// (files or directories). Documents of another kind are an error.
func ReadCRDs(paths ...string) ([]*apiextv1.CustomResourceDefinition, error) {
	var files []string
	for _, p := range paths {
		fi, err := os.Stat(p)
		if err != nil {
			return nil, fmt.Errorf("read crds: %w", err)
		}
		if !fi.IsDir() {
			files = append(files, p)
			continue
		}
		ents, err := os.ReadDir(p)
		if err != nil {
			return nil, fmt.Errorf("read crds: %w", err)
		}
		for _, e := range ents {
			if !e.IsDir() && (strings.HasSuffix(e.Name(), ".yaml") || strings.HasSuffix(e.Name(), ".yml")) {
				files = append(files, filepath.Join(p, e.Name()))
			}
		}
	}
	var crds []*apiextv1.CustomResourceDefinition
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("read crds: %w", err)
		}
		dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
		for doc := 1; ; doc++ {
			crd := &apiextv1.CustomResourceDefinition{}
			err := dec.Decode(crd)
			if err == io.EOF {
				break
			}
			if err != nil {
				return nil, fmt.Errorf("read crds: %s document %d: %w", f, doc, err)
			}
			if crd.Kind == "" && crd.Name == "" {
				continue // empty document
			}
			if crd.Kind != "CustomResourceDefinition" || crd.APIVersion != apiextv1.SchemeGroupVersion.String() {
				return nil, fmt.Errorf("read crds: %s document %d: %s %s is not an apiextensions.k8s.io/v1 CustomResourceDefinition", f, doc, crd.APIVersion, crd.Kind)
			}
			crds = append(crds, crd)
		}
	}
	if len(crds) == 0 {
		return nil, fmt.Errorf("read crds: no CustomResourceDefinition in %s", strings.Join(paths, ", "))
	}
	return crds, nil
}
