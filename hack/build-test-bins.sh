#!/usr/bin/env bash
# Builds the binaries the integration tests run, all from the Go module proxy:
#   - kube-apiserver and etcd (hack/tools module), for the Kubernetes tests
#   - the CNI reference plugins and cnitool, used as real delegates
# Output goes to _output/bin (kube-apiserver, etcd, cnitool) and
# _output/cni/bin (the reference plugins). Re-running is cheap: Go's build
# cache makes a rebuild take seconds, and existing binaries are kept.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
out=$root/_output
mkdir -p "$out/bin" "$out/cni/bin"

CNI_PLUGINS_VERSION=${CNI_PLUGINS_VERSION:-v1.9.0}
CNI_VERSION=${CNI_VERSION:-v1.3.0}
K8S_VERSION=v1.37.2

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
    v=k8s.io/component-base/version
    go build -trimpath -ldflags="-s -w -X $v.gitVersion=$K8S_VERSION -X $v.gitMajor=1 -X $v.gitMinor=37" \
      -o "$out/bin/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver
  fi
fi
echo ">> test binaries ready in $out"
