#!/usr/bin/env bash
# Builds the binaries the integration tests run, all from the Go module proxy:
#   - kube-apiserver and etcd (hack/tools module), for the Kubernetes tests
#   - the CNI reference plugins and cnitool, used as real delegates
#   - helm, which renders the chart into deploy/manifests (make manifests)
#   - kubelet, kubectl, kube-scheduler, kube-controller-manager (hack/tools
#     module), containerd, its runc shim and
#     ctr, runc with a static libseccomp, and Debian's static busybox: the
#     real-node tests (pkg/testutil/kubenode, test/node). SKIP_NODE=1 skips them.
# Output goes to _output/bin (kube-apiserver, etcd, cnitool, kubelet, kubectl,
# containerd*, ctr, runc, busybox) and _output/cni/bin (the reference
# plugins); OUTPUT=DIR puts it elsewhere. Re-running is cheap: Go's build
# cache makes a rebuild take seconds, and existing binaries are kept.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
out=${OUTPUT:-$root/_output}
mkdir -p "$out/bin" "$out/cni/bin"

CNI_PLUGINS_VERSION=${CNI_PLUGINS_VERSION:-v1.9.0}
CNI_VERSION=${CNI_VERSION:-v1.3.0}
K8S_VERSION=v1.37.2
CONTAINERD_VERSION=v2.4.2
RUNC_VERSION=v1.5.3
HELM_VERSION=v4.3.2
v=k8s.io/component-base/version
K8S_LDFLAGS="-s -w -X $v.gitVersion=$K8S_VERSION -X $v.gitMajor=1 -X $v.gitMinor=37"

if [ ! -x "$out/cni/bin/bridge" ] || [ "$(cat "$out/cni/bin/.version" 2>/dev/null)" != "$CNI_PLUGINS_VERSION" ]; then
  echo ">> building CNI reference plugins $CNI_PLUGINS_VERSION"
  GOBIN=$out/cni/bin go install \
    github.com/containernetworking/plugins/plugins/main/bridge@"$CNI_PLUGINS_VERSION" \
    github.com/containernetworking/plugins/plugins/main/macvlan@"$CNI_PLUGINS_VERSION" \
    github.com/containernetworking/plugins/plugins/main/ptp@"$CNI_PLUGINS_VERSION" \
    github.com/containernetworking/plugins/plugins/main/loopback@"$CNI_PLUGINS_VERSION" \
    github.com/containernetworking/plugins/plugins/ipam/host-local@"$CNI_PLUGINS_VERSION" \
    github.com/containernetworking/plugins/plugins/ipam/static@"$CNI_PLUGINS_VERSION" \
    github.com/containernetworking/plugins/plugins/meta/bandwidth@"$CNI_PLUGINS_VERSION"
  echo "$CNI_PLUGINS_VERSION" > "$out/cni/bin/.version"
fi
if [ ! -x "$out/bin/helm" ] || [ "$(cat "$out/bin/.helm-version" 2>/dev/null)" != "$HELM_VERSION" ]; then
  echo ">> building helm $HELM_VERSION (renders deploy/helm/cni-genie: make manifests)"
  GOBIN=$out/bin go install -trimpath -ldflags='-s -w' helm.sh/helm/v4/cmd/helm@"$HELM_VERSION"
  echo "$HELM_VERSION" > "$out/bin/.helm-version"
fi
if [ ! -x "$out/bin/cnitool" ]; then
  echo ">> building cnitool $CNI_VERSION"
  GOBIN=$out/bin go install github.com/containernetworking/cni/cnitool@"$CNI_VERSION"
fi

if [ "${SKIP_KUBE:-0}" != 1 ]; then
  cd "$root/hack/tools"
  if [ ! -x "$out/bin/etcd" ]; then
    echo ">> building etcd"
    go build -trimpath -ldflags='-s -w' -o "$out/bin/etcd" ./etcd
  fi
  if [ ! -x "$out/bin/kube-apiserver" ]; then
    echo ">> building kube-apiserver $K8S_VERSION (about 9 minutes on 2 cores the first time)"
    go build -trimpath -ldflags="$K8S_LDFLAGS" -o "$out/bin/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver
  fi
  # kubelet, kubectl, kube-scheduler and kube-controller-manager: the
  # real-node tests (a DaemonSet needs the last two); they reuse most of
  # kube-apiserver's build cache.
  for c in kubelet kubectl kube-scheduler kube-controller-manager; do
    if [ ! -x "$out/bin/$c" ] && [ "${SKIP_NODE:-0}" != 1 ]; then
      echo ">> building $c $K8S_VERSION (about 3 minutes on 2 cores with kube-apiserver cached)"
      go build -trimpath -ldflags="$K8S_LDFLAGS" -o "$out/bin/$c" k8s.io/kubernetes/cmd/$c
    fi
  done
fi

if [ "${SKIP_NODE:-0}" != 1 ]; then
  if [ ! -x "$out/bin/containerd" ] || [ "$(cat "$out/bin/.containerd-version" 2>/dev/null)" != "$CONTAINERD_VERSION" ]; then
    echo ">> building containerd $CONTAINERD_VERSION (about 2 minutes the first time)"
    CGO_ENABLED=0 GOBIN=$out/bin go install -trimpath -ldflags='-s -w' -tags no_btrfs \
      github.com/containerd/containerd/v2/cmd/containerd@"$CONTAINERD_VERSION" \
      github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2@"$CONTAINERD_VERSION" \
      github.com/containerd/containerd/v2/cmd/ctr@"$CONTAINERD_VERSION"
    echo "$CONTAINERD_VERSION" > "$out/bin/.containerd-version"
  fi
  debs=$out/deb
  mkdir -p "$debs"
  fetch_deb() { # package: download once into $debs (apt-get download installs nothing)
    ls "$debs/$1"_*.deb >/dev/null 2>&1 && return 0
    (cd "$debs" && { apt-get download "$1" || { apt-get update -qq && apt-get download "$1"; }; })
  }
  if [ ! -x "$out/bin/runc" ] || [ "$(cat "$out/bin/.runc-version" 2>/dev/null)" != "$RUNC_VERSION" ]; then
    # containerd 2 gives the pause container the RuntimeDefault seccomp
    # profile, so runc needs seccomp; link libseccomp statically so the
    # binary runs anywhere.
    echo ">> building runc $RUNC_VERSION with a static libseccomp"
    fetch_deb libseccomp-dev
    rm -rf "$debs/seccomp-dev"; dpkg-deb -x "$debs"/libseccomp-dev_*.deb "$debs/seccomp-dev"
    rm -f "$debs"/seccomp-dev/usr/lib/*/libseccomp.so
    PKG_CONFIG_PATH=$(echo "$debs"/seccomp-dev/usr/lib/*/pkgconfig) PKG_CONFIG_SYSROOT_DIR=$debs/seccomp-dev \
      CGO_ENABLED=1 GOBIN=$out/bin go install -trimpath -ldflags='-s -w' -tags seccomp \
      github.com/opencontainers/runc@"$RUNC_VERSION"
    echo "$RUNC_VERSION" > "$out/bin/.runc-version"
  fi
  if [ ! -x "$out/bin/busybox" ]; then
    echo ">> extracting Debian's static busybox (the test pods' image)"
    fetch_deb busybox-static
    rm -rf "$debs/busybox"; dpkg-deb -x "$debs"/busybox-static_*.deb "$debs/busybox"
    cp "$debs/busybox/bin/busybox" "$out/bin/busybox"
  fi
fi
echo ">> test binaries ready in $out"
