// Package image builds container images without a registry or a daemon:
// the cni-genie image (genied, genie, geniectl, genie-install) that the
// DaemonSet runs, and the pause and busybox images the real-node tests
// need, written as one docker-save tarball that `ctr images import` (and
// `docker load`) read.
//
// # Why it is shaped so
//
// Reproducible. The same binaries give the same image digest: every layer
// is a tar built here with sorted entries, uid/gid 0, mode from a fixed
// table and mtime 0; the config has no creation time and no history that
// varies. So a test can compare digests, and a user can rebuild the
// published image from the module.
//
// One layer per image, no base image. The binaries are static (CGO off),
// so the image needs no libc; the directories the pods mount into (run,
// var/run/netns, tmp) are in the layer so a read-only root file system
// works.
//
// go-containerregistry does the OCI/docker encoding (digests, config,
// manifest.json); this package only decides the file tree.
package image
