#!/usr/bin/env bash
# Prints the argocd-cm data that installs the otau.dev health checks and Rollout actions in
# deploy/argocd/ into Argo CD, as a merge patch (docs/gitops.md, "Installing into argocd-cm"):
#
#   hack/argocd-cm.sh > argocd-cm-otau.yaml
#   kubectl -n argocd patch configmap argocd-cm --type merge --patch-file argocd-cm-otau.yaml
#
# The tests run exactly this output in Argo CD's own Lua runtime (tests/deploy/argocd.rs), so
# what is installed is what was tested. The scripts need no `useOpenLibs`: they use only the
# libraries Argo CD opens for custom scripts (base, table, its safe os).
set -euo pipefail
dir=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/deploy/argocd/otau.dev
indent() { sed "s/^/$1/"; }
echo 'data:'
for kind in Rollout IoTConnector SoftwarePackage; do
  echo "  resource.customizations.health.otau.dev_${kind}: |"
  indent '    ' < "$dir/$kind/health.lua"
done
echo '  resource.customizations.actions.otau.dev_Rollout: |'
echo '    discovery.lua: |'
indent '      ' < "$dir/Rollout/actions/discovery.lua"
echo '    definitions:'
for action in pause resume approve abort; do
  echo "    - name: $action"
  echo '      action.lua: |'
  indent '        ' < "$dir/Rollout/actions/$action/action.lua"
done
