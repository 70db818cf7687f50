#!/usr/bin/env bash
# Benchmark of the Rollout controller at scale: `cargo bench --bench rollout-bench` builds the
# operator and the benchmark (benches/rollout-bench.rs) in release mode, then runs one Rollout
# of N simulated devices (default 1,000,000) through the operator as a process against the in-process emulator, with a local control plane
# (hack/control-plane.sh; tools from hack/tools.sh). Not part of `cargo test`; prints the
# figures (notifications/s, platform calls per device, apply -> Complete, report -> status
# p50/p99, operator RSS). See docs/scale.md.
#
#   hack/rollout-bench.sh [--devices N] [--push] [--timeout SECONDS] [other rollout-bench flags]
#
# A million devices needs about 3 GiB of free memory (the emulator's fleet lives in the bench
# process) and takes several minutes on two cores.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

args=("$@")
if [[ " ${args[*]-} " != *" --devices "* ]]; then
  args+=(--devices 1000000)
fi
if [[ " ${args[*]-} " != *" --timeout "* ]]; then
  args+=(--timeout 3600)
fi
exec cargo bench --quiet --bench rollout-bench -- "${args[@]}"
