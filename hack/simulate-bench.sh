#!/usr/bin/env bash
# Benchmark of `otau-operator simulate`: wall time and peak memory (RSS) of one run with a
# large fleet (default 1,000,000 devices) and a 5-wave rollout, in release mode. Not part of
# `cargo test`; prints the figures.
#
#   hack/simulate-bench.sh [--devices N] [--profile FILE] [--seed S]
#
# The default profile (written below) has fixed step durations and a few failing and silent
# devices, so each wave takes a handful of polls: the figures then show the cost per device of
# one step. examples/fleet-profile.yaml spreads device steps over hours, so a run takes hundreds
# of polls (each reads only the devices changed since the previous one);
# `--profile examples/fleet-profile.yaml` measures that (see docs/simulate.md for figures).
#
# Needs /usr/bin/time (Debian package `time`) for the peak RSS.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

devices=1000000
profile=
seed=1
while (($#)); do
  case $1 in
    --devices) devices=$2; shift 2 ;;
    --profile) profile=$2; shift 2 ;;
    --seed) seed=$2; shift 2 ;;
    *) echo "usage: $0 [--devices N] [--profile FILE] [--seed S]" >&2; exit 1 ;;
  esac
done
[[ -x /usr/bin/time ]] || { echo "/usr/bin/time is needed (apt-get install time)" >&2; exit 1; }

cargo build --release --quiet --bin otau-operator
# Where cargo put it: CARGO_TARGET_DIR (or a cargo config) may move the target folder.
target_dir=$(cargo metadata --format-version 1 --no-deps |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

if [[ -z $profile ]]; then
  profile=$work/fleet.yaml
  cat >"$profile" <<'YAML'
seed: 1
groups:
  - name: gateways
    fraction: 1.0
    identity_prefix: gw-
    version: "1.0.0"
    tags: [{name: model, value: iotgw1}]
    behaviour:
      outcomes: {install_error: 0.01, download_error: 0.005, silence: 0.002}
      durations: {step: 1s, test: 5s, download: 20s, install: 30s, reboot: 15s}
YAML
fi

# Five waves with a soak after each of the first four; the gateways of the example profile.
cat >"$work/rollout.yaml" <<'YAML'
apiVersion: otau.dev/v1alpha1
kind: Rollout
metadata:
  name: bench-five-waves
spec:
  packageRef: {name: fw-1-0-2}
  targets:
    tags:
      - {name: model, value: iotgw1}
      - {name: model, value: iotgw0}
  waves:
    - {percent: 1, soak: 1h}
    - {percent: 5, soak: 1h}
    - {percent: 20, soak: 1h}
    - {percent: 50, soak: 1h}
    - {percent: 100}
  policy:
    deviceTimeout: 2h
    retries: 1
    failureThreshold: {percent: 20, minFinished: 100}
YAML

/usr/bin/time -v -o "$work/time.txt" "$target_dir/release/otau-operator" simulate \
  -f "$work/rollout.yaml" -f examples/package-from-url.yaml \
  --profile "$profile" --devices "$devices" --seed "$seed" --output json --timings \
  >"$work/report.json" 2>"$work/stderr.txt" || true
grep '^timings' "$work/stderr.txt" >&2 || cat "$work/stderr.txt" >&2

python3 - "$work/report.json" "$work/time.txt" "$devices" "$profile" <<'PY'
import json, re, sys
report = json.load(open(sys.argv[1]))
timing = open(sys.argv[2]).read()
wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)", timing).group(1)
rss_kib = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", timing).group(1))
parts = [float(p) for p in wall.split(":")]
seconds = sum(p * 60 ** i for i, p in enumerate(reversed(parts)))
devices = int(sys.argv[3])
print(f"simulate-bench: {devices} devices, profile {sys.argv[4]}, {len(report['waves'])} waves")
print(f"  result:          {report['result']['phase']} ({report['result']['reason']}), exit {report['result']['exitCode']}")
print(f"  targets:         {report['targets']}, succeeded {report['totals']['succeeded']}, success rate {report.get('successRate')}")
print(f"  virtual time:    {report['elapsed']} in {report['steps']} steps, {report['configOtauWrites']} config_otau writes")
print(f"  wall time:       {seconds:.1f} s ({seconds / max(report['steps'], 1) * 1000:.0f} ms per step)")
print(f"  peak RSS:        {rss_kib / 1024:.0f} MiB ({rss_kib * 1024 / devices:.0f} bytes per device)")
PY
