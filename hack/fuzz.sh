#!/usr/bin/env bash
# Fuzzes every parser of untrusted input (docs/testing.md, "Fuzzing"): builds the targets of
# fuzz/ with afl.rs (coverage-guided, stable Rust) and runs each under AFL++ until it has
# executed --execs inputs (default 1,000,000) or --seconds passed (default 900 per target),
# starting from its seed corpus fuzz/corpus/<target>/. Prints executions, crashes and hangs
# per target and replays every crash to show its panic. Not part of `cargo test`.
#
#   hack/fuzz.sh [--execs N] [--seconds S] [--save-corpus] [TARGET...]
#
# --save-corpus minimises what a run found with afl-cmin into fuzz/corpus/<target>/ (kept
# under 1 MiB per target). Exits 1 when a corpus input fails on replay or a target crashed.
#
# Needs cargo-afl (`cargo install --locked cargo-afl`, then `cargo afl config --build` once,
# which builds the AFL++ it bundles). The build goes to $FUZZ_TARGET_DIR (default
# ~/.cache/otau-operator/fuzz-target), the findings to $FUZZ_OUT (default that folder's
# `findings/`).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

execs=1000000
seconds=900
save=0
targets=()
while (($#)); do
  case $1 in
    --execs) execs=$2; shift 2 ;;
    --seconds) seconds=$2; shift 2 ;;
    --save-corpus) save=1; shift ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    -*) echo "usage: $0 [--execs N] [--seconds S] [--save-corpus] [TARGET...]" >&2; exit 2 ;;
    *) targets+=("$1"); shift ;;
  esac
done
all=(otau_in manifest push_body push_signature emulator_device emulator_management emulator_mqtt simulate_yaml safe_text)
((${#targets[@]})) || targets=("${all[@]}")

cargo afl --version >/dev/null 2>&1 || {
  echo "cargo-afl is missing: cargo install --locked cargo-afl && cargo afl config --build" >&2
  exit 2
}
export CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-$HOME/.cache/otau-operator/fuzz-target}"
out_root="${FUZZ_OUT:-$CARGO_TARGET_DIR/findings}"
bin="$CARGO_TARGET_DIR/release"

echo "==> cargo afl build --release (fuzz/)" >&2
cargo afl build --release --locked --manifest-path fuzz/Cargo.toml --bins >&2

# AFL++ settings for a shared machine without a tuned kernel: no UI, no CPU binding, no
# core-pattern or frequency checks; a run ends by itself at -E executions or -V seconds.
export AFL_NO_UI=1 AFL_NO_AFFINITY=1 AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1
export AFL_QUIET=1

stat() { awk -F' *: *' -v k="$1" '$1 == k { print $2 }' "$2"; }

failed=0
summary=()
for t in "${targets[@]}"; do
  corpus="fuzz/corpus/$t"
  [[ -d $corpus ]] || { echo "no corpus $corpus (targets: ${all[*]})" >&2; exit 2; }
  echo "==> $t: replaying $corpus" >&2
  "$bin/replay" "$t" "$corpus" >&2 || failed=1
  out="$out_root/$t"
  rm -rf "$out"
  mkdir -p "$out"
  echo "==> $t: afl-fuzz -E $execs -V $seconds" >&2
  started=$SECONDS
  cargo afl fuzz -i "$corpus" -o "$out" -E "$execs" -V "$seconds" -- "$bin/$t" >"$out/afl.log" 2>&1 || {
    echo "afl-fuzz failed for $t; the end of $out/afl.log:" >&2
    tail -20 "$out/afl.log" >&2
    failed=1
    continue
  }
  stats="$out/default/fuzzer_stats"
  done_execs=$(stat execs_done "$stats")
  crashes=$(stat saved_crashes "$stats")
  hangs=$(stat saved_hangs "$stats")
  edges=$(stat edges_found "$stats")
  paths=$(stat corpus_count "$stats")
  summary+=("$(printf '%-20s %12s %8s %6s %7s %7s %6ss' "$t" "$done_execs" "$crashes" "$hangs" "$edges" "$paths" "$((SECONDS - started))")")
  if ((crashes > 0)); then
    failed=1
    echo "==> $t: $crashes crash(es); replaying them:" >&2
    for crash in "$out"/default/crashes/id:*; do
      echo "--- $crash" >&2
      "$bin/replay" "$t" "$crash" >&2 || true
    done
  fi
  if ((save)); then
    min="$out/cmin"
    cargo afl cmin -i "$out/default/queue" -o "$min" -- "$bin/$t" >"$out/cmin.log" 2>&1
    size=$(du -sb "$min" | cut -f1)
    if ((size < 1048576)); then
      rm -rf "$corpus" && cp -r "$min" "$corpus"
      echo "==> $t: corpus saved ($(ls "$corpus" | wc -l) inputs, $size bytes)" >&2
    else
      echo "==> $t: minimised corpus is $size bytes, over 1 MiB: not saved" >&2
    fi
  fi
done

printf '\n%-20s %12s %8s %6s %7s %7s %7s\n' TARGET EXECS CRASHES HANGS EDGES CORPUS TIME
printf '%s\n' "${summary[@]}"
exit "$failed"
