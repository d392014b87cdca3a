#!/usr/bin/env bash
# One-shot GPU check for faceval on a machine with one NVIDIA GPU (written for an H200, driver
# 580, Python 3.12 with torch 2.11 + transformers 5.x, no network, no Rust toolchain).
#
#   scripts/gpu-check.sh [BINARY] [--budget SECONDS] [--only GROUPS] [--fxb-n N] [--cpu-dry-run]
#
# BINARY defaults to target/cuda/gpu/faceval, else .gpu-carry/faceval.xz (both written by
# scripts/build-cuda.sh; an .xz binary is unpacked first). Steps, each under its own `timeout`
# and all under one deadline (--budget, default 480 s, so the whole run ends inside about 8
# minutes; a step that would start past it is recorded as skipped); a failed step is logged
# and the next one runs. Groups, in order (--only parity,sidebyside,sweep,facexbench picks):
#   a. nvidia-smi facts (always);
#   b. parity: `faceval parity` on the tiny InternVL, LLaVA, CLIP/SigLIP and Qwen2-VL /
#      Qwen2.5-VL fixtures, on the device, f32 and bf16 (JSON per family and dtype);
#   c. an InternVL3-1B-sized random-weight checkpoint (bf16, transformers' save_pretrained) in
#      /tmp, 16 generated face images and a task over them, and a FaceXBench-format folder of
#      --fxb-n questions (default 5,000) in FaceXBench's one/two/zero-image mix
#      (tools/gpu_side_by_side.py make-checkpoint, make-data, make-facexbench);
#   d. sidebyside: `faceval bench` on that checkpoint (or `faceval generate --json` once per
#      image if bench cannot take --device), GPU memory sampled by nvidia-smi every 100 ms;
#      then transformers bf16 + SDPA on the same weights, prompt, images and max_new_tokens:
#      vision / prefill / decode / TTFT / TPOT, peak VRAM;
#   e. sweep: `faceval run --task facexbench --batch-size B` for B = 1, 4, 16, 64 on the first
#      32/64/128/256 FaceXBench-mix questions, image-feature cache off: items/s, p50/p95
#      latency, peak VRAM, and whether every answer equals batch size 1's;
#   f. facexbench: `faceval run` over all --fxb-n questions at the sweep's fastest batch size
#      (64 if the sweep did not run), then transformers batched `generate` over the same
#      questions (tools/gpu_side_by_side.py transformers-facexbench, batch 64): wall time,
#      items/s, p50/p95, peak VRAM;
#   g. results.json + summary.md with every table.
# Output: $OUT (or ./gpu-results when OUT is unset) holds exactly four files — summary.md,
# results.json, gpu-check.log and raw.tar.gz (every step's raw output) — rewritten after each
# step, so a run cut short still leaves what it reached.
#
# --cpu-dry-run: the same steps on the CPU at tiny sizes (tiny random checkpoint, 50
# FaceXBench-mix questions, smaller sweep; no nvidia-smi, no CUDA), to prove the script end
# to end on a machine without a GPU. BINARY then defaults to target/debug/faceval.
set -uo pipefail
cd "$(dirname "$0")/.."
REPO="$PWD"

DRY=0
BIN=""
BUDGET=480
ONLY="parity,sidebyside,sweep,facexbench"
FXB_N=""
while (($#)); do
  case "$1" in
    --cpu-dry-run) DRY=1 ;;
    --budget) BUDGET="$2"; shift ;;
    --budget=*) BUDGET="${1#--budget=}" ;;
    --only) ONLY="$2"; shift ;;
    --only=*) ONLY="${1#--only=}" ;;
    --fxb-n) FXB_N="$2"; shift ;;
    --fxb-n=*) FXB_N="${1#--fxb-n=}" ;;
    -h|--help) sed -n '2,38p' "$0"; exit 0 ;;
    *) BIN="$1" ;;
  esac
  shift
done
if [[ -z "$BIN" ]]; then
  if ((DRY)); then
    BIN="target/debug/faceval"
  elif [[ -x target/cuda/gpu/faceval ]]; then
    BIN="target/cuda/gpu/faceval"
  else
    BIN=".gpu-carry/faceval.xz" # what build-cuda.sh leaves for the device tool to carry
  fi
fi
[[ "$BIN" == /* ]] || BIN="$REPO/$BIN"
PYTHON="${PYTHON:-python3}"
OUT="${OUT:-$REPO/gpu-results}"
WORK="${TMPDIR:-/tmp}/faceval-gpu-check"
CKPT="${TMPDIR:-/tmp}/faceval-internvl1b-random"
DATA="$WORK/data"
FIXTURES="$REPO/harness/models/tests/fixtures/internvl"
rm -rf "$WORK"
mkdir -p "$OUT" "$WORK"
rm -f "$OUT/summary.md" "$OUT/results.json" "$OUT/raw.tar.gz" "$OUT/gpu-check.log"
exec > >(tee -a "$OUT/gpu-check.log") 2>&1

# A compressed binary (build-cuda.sh writes .gpu-carry/faceval.xz) is unpacked next to WORK;
# python's lzma stands in where the xz tool is missing.
if [[ "$BIN" == *.xz ]]; then
  PACKED="$BIN"
  BIN="$WORK/faceval"
  if command -v xz >/dev/null; then
    xz -dc "$PACKED" >"$BIN"
  else
    "$PYTHON" -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' "$PACKED" "$BIN"
  fi
  chmod +x "$BIN"
  echo "gpu-check: unpacked $PACKED to $BIN ($(stat -c %s "$BIN") bytes)"
fi

# SWEEP: "batch_size:items" pairs; the larger batches get more items so each runs a few calls.
if ((DRY)); then
  DEVICE=cpu; SIZE=tiny; N=4; WARMUP=1; REPEAT=2; MAX_NEW=8
  FXB_N="${FXB_N:-50}"; FXB_POOL=8; SWEEP="1:8 4:8 16:32 64:50"
else
  DEVICE=cuda; SIZE=1b; N=16; WARMUP=2; REPEAT=2; MAX_NEW=32
  FXB_N="${FXB_N:-5000}"; FXB_POOL=64; SWEEP="1:32 4:64 16:128 64:256"
fi
want() { [[ ",$ONLY," == *",$1,"* ]]; }
START=$(date +%s)
DEADLINE=$((START + BUDGET))
echo "gpu-check: $(date -u +%FT%TZ) mode=$([[ $DRY == 1 ]] && echo cpu-dry-run || echo gpu) binary=$BIN budget=${BUDGET}s"
echo "gpu-check: OUT=$OUT WORK=$WORK only=$ONLY fxb-n=$FXB_N"
echo "[]" >"$WORK/steps.json"

# Records a step's outcome in steps.json (read by the summary).
record() { # name status seconds note
  "$PYTHON" - "$WORK/steps.json" "$@" <<'EOF'
import json, sys
path, name, status, seconds, note = sys.argv[1:6]
steps = json.load(open(path))
steps.append({"step": name, "status": status, "seconds": float(seconds), "note": note})
json.dump(steps, open(path, "w"), indent=1)
EOF
}

# Rewrites $OUT's summary, results and raw archive from what $WORK holds so far.
publish() {
  "$PYTHON" "$REPO/tools/gpu_side_by_side.py" summarize --results "$WORK" >/dev/null 2>"$WORK/summarize.err" ||
    echo "gpu-check: summarize failed: $(tail -3 "$WORK/summarize.err")"
  [[ -f "$WORK/summary.md" ]] && cp "$WORK/summary.md" "$OUT/summary.md"
  [[ -f "$WORK/results.json" ]] && cp "$WORK/results.json" "$OUT/results.json"
  tar -czf "$OUT/raw.tar.gz" --exclude='*/data/img' --exclude='*/data/facexbench' -C "$(dirname "$WORK")" "$(basename "$WORK")" 2>/dev/null || true
}

# step NAME MAX_SECONDS STDOUT_FILE CMD...: runs CMD under `timeout`, never past the deadline.
step() {
  local name="$1" max="$2" outfile="$3"
  shift 3
  local now left t rc t0 t1 status note
  now=$(date +%s)
  left=$((DEADLINE - now - 10)) # keep 10 s for the summary
  t=$((max < left ? max : left))
  if ((t < 5)); then
    echo "gpu-check: [$name] skipped: no time left in the ${BUDGET}s budget"
    record "$name" skipped 0 "budget exhausted"
    return 124
  fi
  echo "gpu-check: [$name] start (timeout ${t}s): $*"
  t0=$(date +%s.%N)
  timeout -k 5 "$t" "$@" >"$outfile" 2>"$WORK/$name.err"
  rc=$?
  t1=$(date +%s.%N)
  local secs
  secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.1f", b-a}')
  if ((rc == 0)); then
    status=ok; note=""
  elif ((rc == 124 || rc == 137)); then
    status=timeout; note="killed after ${t}s"
  else
    status=failed; note="exit $rc: $(tail -1 "$WORK/$name.err" | tr -d '"\\' | cut -c1-200)"
  fi
  echo "gpu-check: [$name] $status in ${secs}s ${note}"
  tail -5 "$WORK/$name.err" | sed "s/^/  [$name stderr] /"
  record "$name" "$status" "$secs" "$note"
  publish
  return $rc
}

# --- environment: the CUDA libraries the binary links (cudart, cublas, cublasLt, curand,
# nvrtc; all CUDA 13) come from the pip nvidia-* packages torch installed; libcuda from the
# driver. A .cuda-runtime/ folder, if carried, goes first.
if ((DRY == 0)); then
  NVLIBS="$("$PYTHON" - <<'EOF'
import glob, importlib.util, os
dirs = []
spec = importlib.util.find_spec("nvidia")
for base in (spec.submodule_search_locations if spec else []) or []:
    dirs += sorted(d for d in glob.glob(os.path.join(base, "*", "lib")) if os.path.isdir(d))
print(":".join(dirs))
EOF
)"
  EXTRA=""
  [[ -d "$REPO/.cuda-runtime" ]] && EXTRA="$REPO/.cuda-runtime"
  for d in /usr/local/nvidia/lib64 /usr/local/nvidia/lib /usr/local/cuda/lib64; do
    [[ -d "$d" ]] && NVLIBS="${NVLIBS:+$NVLIBS:}$d"
  done
  export LD_LIBRARY_PATH="${EXTRA:+$EXTRA:}${NVLIBS}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  echo "gpu-check: LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
fi
if [[ -x "$BIN" ]]; then
  ldd "$BIN" | tee "$WORK/ldd.txt"
  if grep -q "not found" "$WORK/ldd.txt"; then
    echo "gpu-check: WARNING: the binary misses shared libraries (above); faceval steps will fail"
    record ldd failed 0 "$(grep 'not found' "$WORK/ldd.txt" | awk '{print $1}' | tr '\n' ' ')"
  else
    record ldd ok 0 ""
  fi
  "$BIN" --version >"$WORK/faceval-version.txt" 2>&1
  "$BIN" --help >"$WORK/faceval-help.txt" 2>&1
else
  echo "gpu-check: $BIN is missing or not executable; the faceval steps will fail"
  record binary failed 0 "$BIN missing"
fi
{
  "$PYTHON" -c 'import sys, torch, transformers; print("python", sys.version.split()[0]); print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available()); print("transformers", transformers.__version__)'
} >"$WORK/python-env.txt" 2>&1
cat "$WORK/python-env.txt"

# --- a. nvidia-smi
if ((DRY == 0)); then
  step nvidia-smi 30 "$WORK/nvidia-smi.txt" bash -c \
    'nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used,clocks.max.sm,clocks.max.mem,power.limit,compute_cap --format=csv && nvidia-smi'
fi

# --- b. parity on the tiny fixtures of every family (exit 1 = a tolerance miss; the JSON is
# written either way). InternVL runs 4 checkpoints × 3 cases; LLaVA and zero-shot take seconds.
if want parity; then
  for fam in internvl llava zero_shot qwen2_vl; do
    for dt in f32 bf16; do
      [[ $fam == internvl ]] && t=150 || t=60
      step "parity-${fam/_/-}-$dt" "$t" "$WORK/parity-${fam/_/-}-$dt.json" "$BIN" parity \
        --fixtures "$REPO/harness/models/tests/fixtures/$fam" --device "$DEVICE" --dtype "$dt" --json
    done
  done
fi

# --- c. the 1B-sized random checkpoint and the inputs
step checkpoint 200 "$WORK/checkpoint.json" "$PYTHON" "$REPO/tools/gpu_side_by_side.py" make-checkpoint \
  --out "$CKPT" --size "$SIZE" --device "$DEVICE" --dtype bf16
step data 60 "$WORK/data.out" "$PYTHON" "$REPO/tools/gpu_side_by_side.py" make-data \
  --out "$DATA" --n "$N" --max-new-tokens "$MAX_NEW"
if want sweep || want facexbench; then
  step facexbench-data 60 "$WORK/facexbench-data.json" "$PYTHON" "$REPO/tools/gpu_side_by_side.py" make-facexbench \
    --out "$DATA" --n "$FXB_N" --pool "$FXB_POOL"
  cp "$DATA/facexbench_info.json" "$WORK/facexbench_info.json" 2>/dev/null
fi
cat >"$WORK/internvl1b-random.toml" <<EOF
name = "internvl1b-random"
kind = "internvl"
display_name = "InternVL3-1B-sized, random weights"
source = "$CKPT"
dtype = "bf16"
description = "gpu-check: InternVL3-1B shapes, transformers' random init"
EOF

# GPU memory in use, sampled every 100 ms while one side runs (same measure for both sides).
SAMPLER=""
start_sampler() {
  SAMPLER=""
  if ((DRY == 0)); then
    nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 100 >"$WORK/$1" 2>/dev/null &
    SAMPLER=$!
    sleep 0.5
  fi
}
stop_sampler() {
  if [[ -n "$SAMPLER" ]]; then
    kill "$SAMPLER" 2>/dev/null
    wait "$SAMPLER" 2>/dev/null
    SAMPLER=""
  fi
}

if want sidebyside; then
# --- d. faceval on it. `bench` when it can be put on the device (or in the dry run);
# otherwise `generate --json` once per image (a fresh process each: cold, so pessimistic).
"$BIN" bench --help >"$WORK/bench-help.txt" 2>&1 && HAS_BENCH=1 || HAS_BENCH=0
"$BIN" generate --help >"$WORK/generate-help.txt" 2>&1 && HAS_GEN=1 || HAS_GEN=0
grep -q -- '--device' "$WORK/bench-help.txt" && BENCH_DEV=1 || BENCH_DEV=0
grep -q -- '--device' "$WORK/generate-help.txt" && GEN_DEV=1 || GEN_DEV=0
echo "gpu-check: bench=$HAS_BENCH (--device: $BENCH_DEV), generate=$HAS_GEN (--device: $GEN_DEV)"
# Hints for a build that picks its device from the environment; ignored otherwise.
export FACEVAL_DEVICE="$DEVICE" FACEVAL_DTYPE=bf16
if ((HAS_BENCH)) && ((BENCH_DEV || DRY || !HAS_GEN)); then
  # The task and data alone, with the random baseline: separates a task/data problem from a model one.
  step bench-plumbing 30 "$WORK/bench-plumbing.json" "$BIN" bench --model random --task "$DATA/task.toml" \
    --data "$DATA" --repeat 1 --warmup 1 --limit "$N" --format json
  BENCH_ARGS=(bench --model "$WORK/internvl1b-random.toml" --task "$DATA/task.toml" --data "$DATA"
    --repeat "$REPEAT" --warmup "$WARMUP" --limit "$N" --format json)
  ((BENCH_DEV)) && BENCH_ARGS+=(--device "$DEVICE" --dtype bf16)
  start_sampler vram-faceval.csv
  step faceval-bench 200 "$WORK/faceval-bench.json" "$BIN" "${BENCH_ARGS[@]}"
elif ((HAS_GEN)); then
  GEN_FLAGS=""
  ((GEN_DEV)) && GEN_FLAGS="--device $DEVICE --dtype bf16"
  mkdir -p "$WORK/generate"
  start_sampler vram-faceval.csv
  step faceval-generate 200 "$WORK/faceval-generate.out" bash -c '
    k=0
    for img in "$0"/img/*.png; do
      "$1" generate --model "$2" --image "$img" --prompt "$(cat "$0/prompt.txt")" --max-new-tokens "$3" $4 --json \
        >"$5/item$(printf %03d $k).json" || exit 1
      k=$((k + 1))
    done' "$DATA" "$BIN" "$WORK/internvl1b-random.toml" "$MAX_NEW" "$GEN_FLAGS" "$WORK/generate"
else
  echo "gpu-check: this faceval has neither bench nor generate; no faceval timing"
  record faceval skipped 0 "no bench or generate subcommand"
fi
unset FACEVAL_DEVICE FACEVAL_DTYPE
stop_sampler

# --- e. transformers on the same weights and inputs
start_sampler vram-transformers.csv
step transformers 200 "$WORK/transformers.out" "$PYTHON" "$REPO/tools/gpu_side_by_side.py" transformers-bench \
  --model "$CKPT" --data "$DATA" --device "$DEVICE" --dtype bf16 --attn sdpa --n "$N" --warmup "$WARMUP" \
  --out "$WORK/transformers.json"
stop_sampler
fi

FXB_ARGS=(--model "$WORK/internvl1b-random.toml" --task facexbench --data "$DATA" --device "$DEVICE" --dtype bf16
  --feature-cache-mb 0)
# --- e. batch-size sweep: the same first questions at each size; answers must equal batch 1's.
if want sweep; then
  mkdir -p "$WORK/sweep"
  for pair in $SWEEP; do
    b="${pair%%:*}"; n="${pair##*:}"
    rm -rf "$WORK/sweep/b$b"
    # --warmup 1: the first call (PTX JIT, allocator growth) stays out of items/s and the
    # percentiles; the dry run's sizes are too small for that, so it times every call.
    step "sweep-b$b" 150 "$WORK/sweep-b$b.out" "$BIN" run "${FXB_ARGS[@]}" --limit "$n" --batch-size "$b" \
      --warmup "$((DRY ? 0 : 1))" --out "$WORK/sweep/b$b"
  done
  publish
fi

# --- f. the FaceXBench-sized run, faceval then transformers, on the same questions.
if want facexbench; then
  BEST=$("$PYTHON" -c 'import json,sys; r=json.load(open(sys.argv[1])); print(r["batch_sweep"]["best_batch_size"] or "")' \
    "$WORK/results.json" 2>/dev/null)
  BEST="${BEST:-64}"
  rm -rf "$WORK/fxb-faceval"
  # --warmup 0: the wall time and items/s cover every question, the first call included.
  echo "faceval run ${FXB_ARGS[*]} --batch-size $BEST --warmup 0 --out <work>/fxb-faceval" | sed "s#$DATA#<data>#g; s#$WORK/##g" \
    >"$WORK/fxb-faceval.cmd"
  step fxb-faceval 330 "$WORK/fxb-faceval.out" "$BIN" run "${FXB_ARGS[@]}" --batch-size "$BEST" --warmup 0 \
    --out "$WORK/fxb-faceval"
  echo "python3 tools/gpu_side_by_side.py transformers-facexbench --model <ckpt> --data <data> --device $DEVICE --dtype bf16 --attn sdpa --n $FXB_N --batch-size 64" \
    >"$WORK/transformers-fxb.cmd"
  step fxb-transformers 330 "$WORK/fxb-transformers.out" "$PYTHON" "$REPO/tools/gpu_side_by_side.py" transformers-facexbench \
    --model "$CKPT" --data "$DATA" --device "$DEVICE" --dtype bf16 --attn sdpa --n "$FXB_N" --batch-size 64 \
    --out "$WORK/transformers-fxb.json"
fi

# --- g. summary
publish
echo "gpu-check: done in $(($(date +%s) - START)) s; results in $OUT"
[[ -f "$OUT/summary.md" ]] && cat "$OUT/summary.md"
exit 0
