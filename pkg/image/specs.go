package image

import "path/filepath"

// Names of the images, as the chart and the tests refer to them.
const (
	// GenieRef is the chart's default image (values.yaml image.*).
	GenieRef = "docker.io/cni-genie/cni-genie:0.1.0"
	// PauseRef is the sandbox image the test node's containerd pins.
	PauseRef = "registry.k8s.io/pause:3.10"
	// BusyboxRef is the test pods' image.
	BusyboxRef = "docker.io/library/busybox:genie-test"
)

// GenieBinaries are the binaries of the cni-genie image, all static.
var GenieBinaries = []string{"genied", "genie", "geniectl", "genie-install"}

// Genie is the cni-genie image: binDir holds GenieBinaries.
func Genie(ref, binDir string) Spec {
	s := Spec{Ref: ref, Entrypoint: []string{"/usr/local/bin/genied"}}
	for _, b := range GenieBinaries {
		s.Files = append(s.Files, File{Path: "usr/local/bin/" + b, Source: filepath.Join(binDir, b)})
	}
	for _, d := range []string{"tmp", "run/genie", "var/run/netns", "var/lib/genie", "sys/fs/bpf", "host/cni/bin", "host/cni/net.d"} {
		s.Files = append(s.Files, File{Path: d, Dir: true})
	}
	return s
}

// Pause is the pod sandbox image around the pause binary
// (hack/images/pause, built static).
func Pause(ref, pauseBin string) Spec {
	return Spec{Ref: ref, Entrypoint: []string{"/pause"}, Files: []File{{Path: "pause", Source: pauseBin}}}
}

// BusyboxApplets are the applet links of the busybox image.
var BusyboxApplets = []string{"sh", "sleep", "ip", "cat", "ls", "ping", "hostname", "nc", "wget", "echo", "true", "ifconfig", "route"}

// Busybox is the test pods' image around a static busybox.
func Busybox(ref, busyboxBin string) Spec {
	s := Spec{Ref: ref, Entrypoint: []string{"/bin/sh"}, Env: []string{"PATH=/bin"},
		Files: []File{{Path: "bin/busybox", Source: busyboxBin}, {Path: "tmp", Dir: true}}}
	for _, a := range BusyboxApplets {
		s.Files = append(s.Files, File{Path: "bin/" + a, Link: "busybox"})
	}
	return s
}
