#!/usr/bin/env bash
# Fuzzes every parser target of the faceval-fuzz crate for SECONDS in total (split evenly over
# the targets, run one after another), then prints cases per target. Exits non-zero when any
# input panicked or hung; failing inputs are saved under target/fuzz-crashes/<target>/
# (copy one into fuzz/regressions/<target>/ to make it a regression case). See docs/fuzzing.md.
#
# Usage: scripts/fuzz.sh SECONDS          (e.g. nice -n 19 scripts/fuzz.sh 3600)
# Environment: FACEVAL_FUZZ_SEED (replay a run), FACEVAL_FUZZ_HANG_SECONDS (default 10),
#              FACEVAL_FUZZ_PROFILE=release (optimised build; the default dev profile keeps
#              overflow checks and debug assertions on, which fuzzing wants).
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ $# -ne 1 || ! "$1" =~ ^[0-9]+([.][0-9]+)?$ ]]; then
  echo "usage: scripts/fuzz.sh SECONDS" >&2
  exit 2
fi
total="$1"
profile_flag=()
bin_dir=debug
if [[ "${FACEVAL_FUZZ_PROFILE:-dev}" == release ]]; then
  profile_flag=(--release)
  bin_dir=release
fi
target_dir="${CARGO_TARGET_DIR:-$PWD/target}"

# The serve targets drive the faceval binary, so build it with the same profile. Both builds
# take the whole workspace's feature set, so a tree already built by `cargo test --workspace`
# is reused as it is (`-p` would select narrower features and rebuild candle and friends).
cargo build --locked --workspace --bins "${profile_flag[@]}"
# The test executables are run directly below, not through `cargo test`: an hour under cargo
# would hold the build directory's lock, and every other cargo command would wait for it.
mapfile -t exes < <(cargo test --locked --workspace "${profile_flag[@]}" --no-run --message-format=json |
  grep '"kind":\["test"\]' | grep 'faceval-fuzz' | grep -E '"name":"(parsers|serve)"' |
  sed -n 's/.*"executable":"\([^"]*\)".*/\1/p')
if [[ ${#exes[@]} -ne 2 ]]; then
  echo "fuzz.sh: expected 2 test executables, got: ${exes[*]}" >&2
  exit 1
fi
targets=()
for exe in "${exes[@]}"; do
  mapfile -t -O "${#targets[@]}" targets < <("$exe" --list 2>/dev/null | sed -n 's/: test$//p')
done
n=${#targets[@]}
if [[ $n -eq 0 ]]; then
  echo "fuzz.sh: no targets found" >&2
  exit 1
fi
per=$(awk -v t="$total" -v n="$n" 'BEGIN { printf "%.3f", t / n }')
stamp=$(date -u +%Y%m%dT%H%M%SZ)
report="$target_dir/fuzz-report-$stamp.txt"
log="$target_dir/fuzz-log-$stamp.txt"
mkdir -p "$target_dir"
: > "$report"
echo "fuzz.sh: $n targets x ${per} s = ${total} s; report $report, log $log"
start=$(date +%s)
status=0
for exe in "${exes[@]}"; do
  # Tests find the repository from their build-time manifest dir; run from the root anyway.
  FACEVAL_FUZZ_SECONDS="$per" FACEVAL_FUZZ_REPORT="$report" FACEVAL_FUZZ_CRASHES="$target_dir/fuzz-crashes" FACEVAL_BIN="$target_dir/$bin_dir/faceval" \
    "$exe" --test-threads=1 --nocapture >> "$log" 2>&1 || status=$?
done
end=$(date +%s)
echo
printf '%-24s %10s %10s %8s %s\n' target cases seconds rate crashes
sed -E 's/^fuzz target=([^ ]+) seed=([^ ]+) replayed=([^ ]+) cases=([^ ]+) seconds=([^ ]+) rate=([^ ]+) crashes=([^ ]+)$/\1 \4 \5 \6 \7/' "$report" |
  awk '{ printf "%-24s %10s %10s %8s %s\n", $1, $2, $3, $4, $5; cases += $2 } END { printf "%-24s %10d\n", "total", cases }'
echo "wall time: $((end - start)) s; seed: $(sed -n 's/.* seed=\([0-9]*\) .*/\1/p' "$report" | head -1)"
grep -E 'FUZZ (CRASH|HANG)' "$log" || true
done_targets=$(wc -l < "$report")
if [[ $status -ne 0 || $done_targets -ne $n ]]; then
  echo "fuzz.sh: FAILED ($done_targets of $n targets finished; exit $status): see $log" >&2
  exit 1
fi
echo "fuzz.sh: no panics or hangs"
