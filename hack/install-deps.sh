#!/usr/bin/env bash
# Installs what building and testing CNI-Genie needs on a fresh Debian machine:
# clang/llvm/libbpf headers for the BPF objects, bpftool, iproute2, iperf3
# (benchmarks), nsenter (util-linux). Idempotent and quick when all is present.
# Also makes sure bpffs is mounted, since the agent pins its maps there.
set -euo pipefail
need=()
command -v clang >/dev/null || need+=(clang llvm)
[ -f /usr/include/bpf/bpf_helpers.h ] || need+=(libbpf-dev)
command -v bpftool >/dev/null || need+=(bpftool)
command -v ip >/dev/null || need+=(iproute2)
command -v iperf3 >/dev/null || need+=(iperf3)
command -v nsenter >/dev/null || need+=(util-linux)
command -v jq >/dev/null || need+=(jq)
command -v ethtool >/dev/null || need+=(ethtool)
command -v iptables >/dev/null || need+=(iptables)   # the kube-proxy-style DNAT baseline of the service benchmark
command -v nft >/dev/null || need+=(nftables)     # the masquerade baseline of the egress benchmark
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "install-deps: need root to install: ${need[*]}" >&2
    exit 1
  fi
  echo ">> apt-get install ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need[@]}" >/dev/null
fi
if [ "$(id -u)" = 0 ] && ! mountpoint -q /sys/fs/bpf; then
  mount -t bpf bpf /sys/fs/bpf
fi
