#!/usr/bin/env bash
# Copies the CRDs (deploy/crds) and the admission policies (deploy/policy,
# when present) into the Helm chart, then renders the chart into the plain
# manifests under deploy/manifests. The chart's copies are never edited by
# hand: pkg/install's tests fail when they differ from their sources or when
# the rendered manifests are stale. Needs helm (hack/build-test-bins.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
chart=deploy/helm/cni-genie
helm=${HELM:-_output/bin/helm}
rm -rf "$chart/crds" "$chart/files/policy"
mkdir -p "$chart/crds"
cp deploy/crds/*.yaml "$chart/crds/"
if compgen -G "deploy/policy/*.yaml" >/dev/null; then
  mkdir -p "$chart/files/policy"
  cp deploy/policy/*.yaml "$chart/files/policy/"
fi
mkdir -p deploy/manifests
{
  echo "# Rendered from deploy/helm/cni-genie by hack/sync-chart.sh (make manifests): do not edit."
  "$helm" template cni-genie "$chart" --namespace kube-system --include-crds
} > deploy/manifests/cni-genie.yaml
{
  echo "# Rendered from deploy/helm/cni-genie by hack/sync-chart.sh (make manifests): do not edit."
  "$helm" template cni-genie "$chart" --namespace kube-system --set uninstall=true
} > deploy/manifests/cni-genie-uninstall.yaml
echo ">> chart synced, manifests rendered into deploy/manifests"
