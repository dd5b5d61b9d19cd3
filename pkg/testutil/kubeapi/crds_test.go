package kubeapi

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestReadCRDs(t *testing.T) {
	dir, err := CRDDir()
	if err != nil {
		t.Fatal(err)
	}
	crds, err := ReadCRDs(dir)
	if err != nil {
		t.Fatal(err)
	}
	var found bool
	for _, c := range crds {
		if c.Name == "network-attachment-definitions.k8s.cni.cncf.io" {
			found = true
			if c.Spec.Group != "k8s.cni.cncf.io" || c.Spec.Names.Kind != "NetworkAttachmentDefinition" ||
				len(c.Spec.Versions) != 1 || c.Spec.Versions[0].Name != "v1" || c.Spec.Scope != "Namespaced" {
				t.Errorf("NAD CRD = %+v", c.Spec)
			}
		}
	}
	if !found {
		t.Errorf("deploy/crds has no NetworkAttachmentDefinition CRD (got %d CRDs)", len(crds))
	}

	tmp := t.TempDir()
	multi := filepath.Join(tmp, "multi.yaml")
	os.WriteFile(multi, []byte(`---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: as.example.com}
---
---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: bs.example.com}
`), 0o600)
	crds, err = ReadCRDs(multi)
	if err != nil || len(crds) != 2 || crds[1].Name != "bs.example.com" {
		t.Errorf("multi-document file: %d crds, %v", len(crds), err)
	}

	other := filepath.Join(tmp, "cm.yaml")
	os.WriteFile(other, []byte("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n"), 0o600)
	if _, err := ReadCRDs(other); err == nil || !strings.Contains(err.Error(), "cm.yaml document 1") {
		t.Errorf("ConfigMap accepted as a CRD: %v", err)
	}
	if _, err := ReadCRDs(t.TempDir()); err == nil {
		t.Error("empty directory accepted")
	}
}
