#!/usr/bin/env bash
# A local Kubernetes control plane (etcd + kube-apiserver, no nodes) for tests and for trying
# the operator by hand. The Rust test harness (tests/support/mod.rs) and people use this same
# script: the harness calls `run`, people call `up` / `down`.
#
# See `hack/control-plane.sh --help` and docs/testing.md.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
DEFAULT_DIR=${OTAU_CONTROL_PLANE_DIR:-${TMPDIR:-/tmp}/otau-operator-control-plane}
# Deadlines in seconds for each component to become ready. Generous: the machine may be busy
# compiling while a test binary starts its control plane.
READY_TIMEOUT=${OTAU_CONTROL_PLANE_TIMEOUT:-120}
STOP_TIMEOUT=15

usage() {
  cat <<EOF
Usage: hack/control-plane.sh COMMAND [options]

A local Kubernetes control plane: etcd and kube-apiserver on free 127.0.0.1 ports, RBAC on,
token authentication, an admin kubeconfig. No scheduler, kubelet or controller-manager:
Pods never run and namespaces never finish deleting.

Commands:
  up [--crds] [DIR]  Start a control plane in the background and print
                     'export KUBECONFIG=...' on stdout, so this works:
                         eval "\$(hack/control-plane.sh up --crds)"
                     --crds also installs crds/*.yaml and waits until they are Established.
                     Default DIR: $DEFAULT_DIR
  down [DIR]         Stop the control plane that 'up' started in DIR.
  status [DIR]       Say whether a control plane runs in DIR (exit status 0 when it does).
  run [--rm] [--audit-policy FILE] DIR
                     Run in the foreground (what the test harness uses): start etcd and
                     kube-apiserver, write DIR/kubeconfig, print one JSON line on stdout
                     ({"kubeconfig": ..., "server": ..., ...}), then keep running until stdin
                     reaches end of file or SIGTERM/SIGINT arrives; then stop both processes.
                     --rm deletes DIR after stopping.
                     --audit-policy FILE turns on the apiserver's audit log with that policy:
                     one JSON event per line in DIR/audit.log (named "audit_log" in the JSON).

Binaries (first match wins):
  \$KUBE_APISERVER, \$ETCD, \$KUBECTL   explicit paths to prebuilt binaries
  \$OTAU_TOOLS_DIR/bin                  what hack/tools.sh builds (default: $(tools_bin))
  PATH
Build the pinned versions with: hack/tools.sh

Environment:
  OTAU_CONTROL_PLANE_DIR      default DIR for up/down/status
  OTAU_CONTROL_PLANE_TIMEOUT  seconds each component may take to become ready (default 120)
EOF
}

log() { printf '[control-plane] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

tools_bin() { echo "$("$HERE/tools.sh" --print)/bin"; }

# resolve_tool NAME ENV_VAR: prints the path of a binary, or fails naming hack/tools.sh.
resolve_tool() {
  local name=$1 var=$2 explicit=${!2:-}
  if [[ -n $explicit ]]; then
    [[ -x $explicit ]] || die "$var=$explicit is not an executable file"
    echo "$explicit"
    return
  fi
  local bin
  bin=$(tools_bin)
  if [[ -x $bin/$name ]]; then echo "$bin/$name"; return; fi
  if command -v "$name" >/dev/null 2>&1; then command -v "$name"; return; fi
  die "$name not found (looked at \$$var, $bin/$name and PATH). Build the pinned test tools with: hack/tools.sh   (or set $var to a prebuilt $name)"
}

# free_ports N: N distinct free loopback TCP ports, space separated. All sockets stay bound
# until every port is picked, so the N ports differ; another process may still take one before
# etcd/apiserver bind it, which `run` detects and retries with new ports.
free_ports() {
  python3 - "$1" <<'PY'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
}

# ---- run ------------------------------------------------------------------------------------

ETCD_PID=""
APISERVER_PID=""
STDIN_WATCH_PID=""
REMOVE_DIR=""
# Extra kube-apiserver flags for the audit log (run --audit-policy); empty without it.
AUDIT_ARGS=()
AUDIT_LOG=""

# stop_pid PID NAME: SIGTERM, wait up to STOP_TIMEOUT seconds, then SIGKILL.
stop_pid() {
  local pid=$1 name=$2 waited=0
  [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  while kill -0 "$pid" 2>/dev/null; do
    if ((waited >= STOP_TIMEOUT * 10)); then
      log "$name did not stop within ${STOP_TIMEOUT}s; killing it"
      kill -KILL "$pid" 2>/dev/null || true
      break
    fi
    sleep 0.1
    waited=$((waited + 1))
  done
  wait "$pid" 2>/dev/null || true
}

stop_all() {
  # Finish the clean-up whatever happens: no more signal traps, no exit on errors (stderr may
  # be a closed pipe by now, so even logging can fail).
  trap '' INT TERM HUP
  trap - EXIT
  set +e
  stop_pid "$APISERVER_PID" kube-apiserver
  stop_pid "$ETCD_PID" etcd
  APISERVER_PID="" ETCD_PID=""
  if [[ -n $STDIN_WATCH_PID ]]; then kill "$STDIN_WATCH_PID" 2>/dev/null || true; fi
  if [[ -n $REMOVE_DIR ]]; then rm -rf -- "$REMOVE_DIR"; fi
}

# tail_log FILE: the end of a component's log, for start failures.
tail_log() {
  log "last lines of $1:"
  tail -n 30 "$1" >&2 || true
}

# wait_ready NAME PID LOG CHECK...: runs CHECK until it succeeds, the process exits, or the
# deadline passes. Returns 0 when ready, 1 on failure.
wait_ready() {
  local name=$1 pid=$2 logfile=$3
  shift 3
  local deadline=$((SECONDS + READY_TIMEOUT))
  until "$@" 2>/dev/null; do
    if ! kill -0 "$pid" 2>/dev/null; then
      log "$name exited during start-up"
      tail_log "$logfile"
      return 1
    fi
    if ((SECONDS >= deadline)); then
      log "$name was not ready within ${READY_TIMEOUT}s"
      tail_log "$logfile"
      return 1
    fi
    sleep 0.1
  done
}

etcd_healthy() {
  local body
  body=$(curl -sf --noproxy "*" --max-time 2 "http://127.0.0.1:$1/health") || return 1
  [[ $body == *'"health":"true"'* ]]
}

apiserver_ready() {
  local dir=$1 port=$2
  [[ -f $dir/certs/apiserver.crt ]] || return 1
  # The token comes from a file (-H @file), so it never shows up in the process list.
  curl -sf --noproxy "*" --max-time 5 --cacert "$dir/certs/apiserver.crt" -H "@$dir/admin-auth-header" \
    "https://127.0.0.1:$port/readyz" >/dev/null
}

# port_clash LOG: whether a start failure was another process taking one of our ports.
port_clash() { grep -qiE 'address already in use|bind: ' "$1" 2>/dev/null; }

# start_once DIR: one attempt to start etcd and the apiserver on fresh ports.
# Returns 0 when both are ready, 2 on a port clash (worth retrying), 1 otherwise.
start_once() {
  local dir=$1 etcd_port peer_port api_port
  read -r etcd_port peer_port api_port < <(free_ports 3)
  rm -rf "$dir/etcd" "$dir/certs"
  mkdir -p "$dir/certs"

  "$ETCD_BIN" --name=otau-local --data-dir="$dir/etcd" \
    --listen-client-urls="http://127.0.0.1:$etcd_port" \
    --advertise-client-urls="http://127.0.0.1:$etcd_port" \
    --listen-peer-urls="http://127.0.0.1:$peer_port" \
    --initial-advertise-peer-urls="http://127.0.0.1:$peer_port" \
    --initial-cluster="otau-local=http://127.0.0.1:$peer_port" \
    --unsafe-no-fsync --log-level=warn \
    </dev/null >"$dir/etcd.log" 2>&1 &
  ETCD_PID=$!
  if ! wait_ready etcd "$ETCD_PID" "$dir/etcd.log" etcd_healthy "$etcd_port"; then
    stop_pid "$ETCD_PID" etcd
    ETCD_PID=""
    if port_clash "$dir/etcd.log"; then return 2; fi
    return 1
  fi
  ETCD_READY_MS=$(($(date +%s%3N) - START_MS))

  "$APISERVER_BIN" \
    --etcd-servers="http://127.0.0.1:$etcd_port" \
    --cert-dir="$dir/certs" \
    --secure-port="$api_port" --bind-address=127.0.0.1 --advertise-address=127.0.0.1 \
    --endpoint-reconciler-type=none --service-cluster-ip-range=10.0.0.0/24 \
    --authorization-mode=RBAC --disable-admission-plugins=ServiceAccount \
    --service-account-issuer="https://127.0.0.1:$api_port/" \
    --service-account-key-file="$dir/sa.key" \
    --service-account-signing-key-file="$dir/sa.key" \
    --token-auth-file="$dir/tokens.csv" \
    "${AUDIT_ARGS[@]}" \
    </dev/null >"$dir/kube-apiserver.log" 2>&1 &
  APISERVER_PID=$!
  if ! wait_ready kube-apiserver "$APISERVER_PID" "$dir/kube-apiserver.log" \
    apiserver_ready "$dir" "$api_port"; then
    stop_pid "$APISERVER_PID" kube-apiserver
    stop_pid "$ETCD_PID" etcd
    APISERVER_PID="" ETCD_PID=""
    if port_clash "$dir/kube-apiserver.log"; then return 2; fi
    return 1
  fi
  ETCD_URL="http://127.0.0.1:$etcd_port"
  SERVER="https://127.0.0.1:$api_port"
}

write_kubeconfig() {
  local dir=$1 token=$2
  (
    umask 077
    cat >"$dir/kubeconfig" <<EOF
# Written by hack/control-plane.sh: admin access to the local control plane in $dir.
apiVersion: v1
kind: Config
clusters:
  - name: otau-local
    cluster:
      server: $SERVER
      certificate-authority: $dir/certs/apiserver.crt
users:
  - name: otau-local-admin
    user:
      token: $token
contexts:
  - name: otau-local
    context:
      cluster: otau-local
      user: otau-local-admin
      namespace: default
current-context: otau-local
EOF
  )
}

# json_string S: S as a JSON string literal.
json_string() { python3 -c 'import json, sys; print(json.dumps(sys.argv[1]))' "$1"; }

cmd_run() {
  local dir="" audit_policy=""
  while (($#)); do
    case $1 in
      --rm) REMOVE_DIR=yes ;;
      --audit-policy)
        (($# >= 2)) || die "run: --audit-policy needs a FILE"
        [[ -f $2 ]] || die "run: --audit-policy $2 is not a file"
        audit_policy=$(cd "$(dirname "$2")" && pwd)/$(basename "$2")
        shift
        ;;
      -h | --help) usage; exit 0 ;;
      -*) die "run: unknown option $1 (see --help)" ;;
      *) [[ -z $dir ]] || die "run: only one DIR, got '$dir' and '$1'"; dir=$1 ;;
    esac
    shift
  done
  [[ -n $dir ]] || die "run: missing DIR (see --help)"
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  [[ -z $REMOVE_DIR ]] || REMOVE_DIR=$dir
  if [[ -n $audit_policy ]]; then
    # Blocking mode: an event is in the file before the response reaches the client.
    AUDIT_LOG=$dir/audit.log
    AUDIT_ARGS=(--audit-policy-file="$audit_policy" --audit-log-path="$AUDIT_LOG"
      --audit-log-format=json --audit-log-mode=blocking --audit-log-maxsize=0)
  fi

  ETCD_BIN=$(resolve_tool etcd ETCD)
  APISERVER_BIN=$(resolve_tool kube-apiserver KUBE_APISERVER)
  for tool in openssl curl python3; do
    command -v "$tool" >/dev/null || die "$tool is required (install it with your package manager)"
  done

  # SIGPIPE is ignored: when the parent is gone, a write to stdout/stderr fails (and set -e
  # exits through the EXIT trap, which stops etcd and the apiserver) instead of killing this
  # script on the spot and leaving them running.
  trap '' PIPE
  trap stop_all EXIT
  trap 'exit 143' TERM
  trap 'exit 130' INT
  trap 'exit 129' HUP

  START_MS=$(date +%s%3N)
  local token
  token=$(openssl rand -hex 32)
  (
    umask 077
    openssl genrsa -out "$dir/sa.key" 2048 2>/dev/null
    printf '%s,otau-local-admin,otau-local-admin,"system:masters"\n' "$token" >"$dir/tokens.csv"
    printf 'Authorization: Bearer %s\n' "$token" >"$dir/admin-auth-header"
  )

  local attempt status
  for attempt in 1 2 3; do
    status=0
    start_once "$dir" || status=$?
    ((status == 2)) || break
    log "a port was taken by another process during start-up; retrying with new ports ($attempt/3)"
  done
  if ((status != 0)); then
    if [[ -n $REMOVE_DIR ]]; then
      die "the control plane did not start (log tails above; without --rm the logs stay in $dir)"
    fi
    die "the control plane did not start (logs in $dir)"
  fi
  write_kubeconfig "$dir" "$token"
  local ready_ms=$(($(date +%s%3N) - START_MS))
  log "ready in ${ready_ms} ms (etcd ${ETCD_READY_MS} ms): $SERVER, kubeconfig $dir/kubeconfig"

  printf '{"kubeconfig": %s, "server": %s, "etcd": %s, "dir": %s, "pid": %d, "startup_ms": %d, "audit_log": %s}\n' \
    "$(json_string "$dir/kubeconfig")" "$(json_string "$SERVER")" "$(json_string "$ETCD_URL")" \
    "$(json_string "$dir")" "$$" "$ready_ms" "$(json_string "$AUDIT_LOG")"

  # Keep running until stdin closes (the parent died, however it died) or a signal arrives.
  # A background job's stdin is /dev/null unless redirected, hence the explicit <&0 copy.
  exec 3<&0
  cat <&3 >/dev/null &
  STDIN_WATCH_PID=$!
  exec 3<&-
  wait "$STDIN_WATCH_PID" || true
  STDIN_WATCH_PID=""
  log "stdin closed; stopping"
  exit 0
}

# ---- up / down / status (for people) -----------------------------------------------------

# supervisor_alive DIR: whether the `run` started by `up` in DIR is still running.
supervisor_alive() {
  local pidfile=$1/supervisor.pid
  [[ -f $pidfile ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null
}

print_env() {
  local dir=$1 kubectl_bin
  echo "export KUBECONFIG=$dir/kubeconfig"
  kubectl_bin=$(resolve_tool kubectl KUBECTL 2>/dev/null) || return 0
  if [[ $(command -v kubectl 2>/dev/null || true) != "$kubectl_bin" ]]; then
    echo "export PATH=$(dirname "$kubectl_bin"):\$PATH"
  fi
}

install_crds() {
  local dir=$1 kubectl_bin
  kubectl_bin=$(resolve_tool kubectl KUBECTL)
  if ! compgen -G "$REPO/crds/*.yaml" >/dev/null; then
    log "crds/ holds no *.yaml files; nothing to install"
    return
  fi
  log "installing crds/ and waiting until they are Established"
  "$kubectl_bin" --kubeconfig "$dir/kubeconfig" apply --server-side -f "$REPO/crds/" >&2
  "$kubectl_bin" --kubeconfig "$dir/kubeconfig" wait --for=condition=Established \
    --timeout=60s -f "$REPO/crds/" >&2
}

cmd_up() {
  local dir="" crds=""
  while (($#)); do
    case $1 in
      --crds) crds=yes ;;
      -h | --help) usage; exit 0 ;;
      -*) die "up: unknown option $1 (see --help)" ;;
      *) [[ -z $dir ]] || die "up: only one DIR, got '$dir' and '$1'"; dir=$1 ;;
    esac
    shift
  done
  dir=${dir:-$DEFAULT_DIR}
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  local down_cmd="hack/control-plane.sh down"
  [[ $dir == "$DEFAULT_DIR" ]] || down_cmd+=" $dir"
  if supervisor_alive "$dir"; then
    log "already running in $dir"
  else
    # Fail early, in this terminal, when binaries are missing.
    resolve_tool etcd ETCD >/dev/null
    resolve_tool kube-apiserver KUBE_APISERVER >/dev/null
    rm -f "$dir/run.json" "$dir/stdin.fifo"
    mkfifo "$dir/stdin.fifo"
    # `run` stops when its stdin closes; a sleeping writer keeps the fifo open until `down`.
    setsid sleep infinity >"$dir/stdin.fifo" </dev/null 2>/dev/null &
    echo $! >"$dir/stdin-keeper.pid"
    setsid "$HERE/control-plane.sh" run "$dir" <"$dir/stdin.fifo" >"$dir/run.json" 2>"$dir/supervisor.log" &
    echo $! >"$dir/supervisor.pid"
    log "starting etcd and kube-apiserver in $dir (log: $dir/supervisor.log)"
    local deadline=$((SECONDS + 2 * READY_TIMEOUT + 10))
    until [[ -s $dir/run.json ]] && grep -q '"kubeconfig"' "$dir/run.json"; do
      if ! supervisor_alive "$dir"; then
        cat "$dir/supervisor.log" >&2 || true
        kill "$(cat "$dir/stdin-keeper.pid")" 2>/dev/null || true
        die "the control plane did not start"
      fi
      if ((SECONDS >= deadline)); then
        cmd_down "$dir"
        die "the control plane was not ready in time (log: $dir/supervisor.log)"
      fi
      sleep 0.2
    done
    log "up: $(grep -o '"server": "[^"]*"' "$dir/run.json" | cut -d'"' -f4)"
  fi
  [[ -z $crds ]] || install_crds "$dir"
  log "kubeconfig: $dir/kubeconfig   (stop it with: $down_cmd)"
  print_env "$dir"
}

cmd_down() {
  local dir=${1:-$DEFAULT_DIR}
  [[ -d $dir ]] || { log "nothing to stop: $dir does not exist"; return 0; }
  dir=$(cd "$dir" && pwd)
  if ! supervisor_alive "$dir"; then
    log "no control plane runs in $dir"
  else
    local pid
    pid=$(cat "$dir/supervisor.pid")
    kill -TERM "$pid"
    local deadline=$((SECONDS + 2 * STOP_TIMEOUT + 5))
    while kill -0 "$pid" 2>/dev/null; do
      ((SECONDS < deadline)) || die "the supervisor (pid $pid) did not stop; see $dir/supervisor.log"
      sleep 0.1
    done
    log "stopped the control plane in $dir"
  fi
  if [[ -f $dir/stdin-keeper.pid ]]; then kill "$(cat "$dir/stdin-keeper.pid")" 2>/dev/null || true; fi
  rm -f "$dir/supervisor.pid" "$dir/stdin-keeper.pid" "$dir/stdin.fifo" "$dir/run.json"
}

cmd_status() {
  local dir=${1:-$DEFAULT_DIR}
  if [[ -d $dir ]] && supervisor_alive "$dir"; then
    log "running in $dir: $(cat "$dir/run.json")"
    return 0
  fi
  log "no control plane runs in $dir"
  return 1
}

case "${1:-}" in
  run) shift; cmd_run "$@" ;;
  up) shift; cmd_up "$@" ;;
  down) shift; cmd_down "$@" ;;
  status) shift; cmd_status "$@" ;;
  -h | --help | help) usage ;;
  "") usage >&2; exit 2 ;;
  *) log "unknown command '$1'"; usage >&2; exit 2 ;;
esac
