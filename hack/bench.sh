#!/usr/bin/env bash
# Data-plane benchmarks (not run in CI): the eBPF overlay against the
# reference bridge plugin, the underlay and a flannel-style kernel-VXLAN
# path, all in one sandbox in one run. Needs root, bpffs, iperf3 and the
# reference plugins (hack/build-test-bins.sh).
#
# Knobs: GENIE_BENCH_ROUNDS (7), GENIE_BENCH_SECONDS (3 per iperf3 run),
# GENIE_BENCH_RTTS (20000 round trips per latency sample),
# GENIE_BENCH_OUT (markdown result file, default _output/bench.md),
# GENIE_BENCH_BASELINES_ONLY=1 (no agents, baselines only).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p _output
export GENIE_BENCH=1
export GENIE_BENCH_OUT=${GENIE_BENCH_OUT:-$PWD/_output/bench.md}
go test -count=1 -v -timeout 30m -run TestPrivilegedDataPlaneBench ./test/bench/
# Per-packet cost of each BPF program (BPF_PROG_RUN with repeat), if the
# data plane package provides benchmarks.
if grep -qs '^func Benchmark' pkg/datapath/*_test.go; then
  go test -count=1 -run '^$' -bench . -benchtime 2s ./pkg/datapath/
fi
echo ">> results in $GENIE_BENCH_OUT"
