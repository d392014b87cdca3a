#!/usr/bin/env bash
# Builds the CUDA faceval binary (target/cuda/gpu/faceval) on a machine with NO GPU and no
# system CUDA, using NVIDIA's CUDA 13.0 wheels from PyPI as the toolkit.
#
# Why CUDA 13.0 exactly: the target H200 machines run driver 580 (CUDA 13.0). candle compiles its
# kernels to PTX at build time and the driver JIT-compiles that PTX at run time; PTX written by a
# newer nvcc (13.1+) carries an ISA version driver 580 refuses. The library versions are the ones
# `cuda-toolkit==13.0.2` pins, which is also what torch 2.11 (cu130) depends on, so the binary's
# sonames (libcublas.so.13, libcublasLt.so.13, libcudart.so.13, libcurand.so.10, libnvrtc.so.13)
# are found in the torch environment of the GPU machine (scripts/gpu-check.sh puts them on
# LD_LIBRARY_PATH). libcuda.so.1 comes from the driver there.
#
# Measured on the 2-core development machine (other builds sharing it):
#   download: about 1.0 GB of wheels (cuBLAS alone 423 MB), ~20 s; 1.2 GB unpacked in .cuda/
#             (git-ignored; reused on the next run).
#   build:    ~35 min from scratch, ~22 of them nvcc compiling candle-kernels (PTX plus the
#             gguf/MoE static library); ~9 min after a change to faceval's own crates.
#   (with [profile.gpu], fat LTO: 15 min 18 s from scratch on 2026-11-29, nvcc included)
#   output:   target/cuda/gpu/faceval, stripped, 23.7 MiB (the release profile gave 65.8 MiB,
#             over the GPU check's 64 MiB; see docs/gpu.md); .gpu-carry/faceval.xz
#             (xz -9, ~80 s) — the form to carry to the GPU machine (docs/gpu.md).
# Usage: scripts/build-cuda.sh            # install toolkit if missing, then build
#        scripts/build-cuda.sh --env      # only print the environment (source-able) and exit
# Environment: CUDA_COMPUTE_CAP (default 90 = Hopper), CARGO_BUILD_JOBS (default: nproc),
#   FACEVAL_FEATURES (default "cuda"; "cuda,flash-attn" adds FlashAttention-2 for the vision
#   encoder: 53 more nvcc kernel files, hours on 2 cores, CUTLASS fetched from GitHub at build
#   time, binary size unknown — unbuilt so far, see docs/gpu.md).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO="$PWD"

CUDA_DIR="$REPO/.cuda"
PIP_DIR="$CUDA_DIR/pip"
ROOT="$CUDA_DIR/root"
# One wheel set, installed with ONE pip command: `pip install --target` skips a top-level folder
# (nvidia/) that already exists, so installing in two steps would silently drop packages.
WHEELS=(
  nvidia-cuda-nvcc==13.0.88
  nvidia-nvvm==13.0.88
  nvidia-cuda-crt==13.0.88
  nvidia-cuda-cccl==13.0.85
  nvidia-cuda-runtime==13.0.96
  nvidia-cublas==13.1.0.3
  nvidia-curand==10.4.0.35
  nvidia-cuda-nvrtc==13.0.88
)
STAMP="$CUDA_DIR/wheels.txt"

install_toolkit() {
  if [[ -f "$STAMP" && "$(cat "$STAMP")" == "${WHEELS[*]}" && -x "$PIP_DIR/nvidia/cu13/bin/nvcc" ]]; then
    echo "build-cuda: CUDA wheels already in $PIP_DIR"
    return
  fi
  echo "build-cuda: installing CUDA 13.0 wheels into $PIP_DIR"
  rm -rf "$PIP_DIR" "$ROOT" "$STAMP"
  mkdir -p "$CUDA_DIR"
  python3 -m pip install --disable-pip-version-check --no-deps --no-compile --target "$PIP_DIR" "${WHEELS[@]}"
  echo "${WHEELS[*]}" >"$STAMP"
}

# The CUDA 13 wheels already share one prefix (nvidia/cu13/{bin,include,lib,nvvm}), and nvcc
# finds cicc, headers and crt relative to its own real path (nvcc.profile), so the compiler runs
# from there. What a system toolkit has and the wheels lack is what the *linker* needs:
# unversioned lib*.so names, a lib64/ folder (cudaforge and cudarc look there) and the driver
# stub libcuda.so. Those go into a separate root made of symlinks.
make_root() {
  local cu="$PIP_DIR/nvidia/cu13"
  rm -rf "$ROOT"
  mkdir -p "$ROOT/lib64/stubs"
  ln -s "$cu/bin" "$ROOT/bin"
  ln -s "$cu/include" "$ROOT/include"
  ln -s "$cu/nvvm" "$ROOT/nvvm"
  local f base
  for f in "$cu"/lib/*.so.* "$cu"/lib/*.a; do
    [[ -e "$f" ]] || continue
    base="$(basename "$f")"
    ln -s "$f" "$ROOT/lib64/$base"
    # libfoo.so.13 -> libfoo.so (what `-lfoo` looks for); skip the .alt variants.
    if [[ "$base" == *.so.* && "$base" != *.alt.* ]]; then
      ln -sf "$f" "$ROOT/lib64/${base%%.so.*}.so"
    fi
  done
  make_libcuda_stub
}

# cudarc is built with `dynamic-linking`, so the link needs a libcuda.so; a system toolkit ships a
# stub in lib64/stubs, the wheels do not. We compile one: every driver entry point cudarc declares,
# as an empty function, in a library whose soname is libcuda.so.1 — so the binary records
# NEEDED libcuda.so.1 and the real driver library is what loads on the GPU machine. The stub is
# never on LD_LIBRARY_PATH at run time.
make_libcuda_stub() {
  local ver src
  ver="$(awk '/^name = "cudarc"/{getline; gsub(/"/,"",$3); print $3; exit}' Cargo.lock)"
  [[ -n "$ver" ]] || { echo "build-cuda: cudarc not in Cargo.lock" >&2; exit 1; }
  cargo fetch --locked >/dev/null
  src="$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/"cudarc-$ver"/src/driver/sys/mod.rs 2>/dev/null | head -1)"
  [[ -f "$src" ]] || { echo "build-cuda: cudarc-$ver source not found after cargo fetch" >&2; exit 1; }
  local c="$ROOT/lib64/stubs/libcuda_stub.c"
  grep -oE '^pub unsafe fn cu[A-Za-z0-9_]+' "$src" | awk '{print $4}' | sort -u |
    awk '{print "void " $1 "(void) {}"}' >"$c"
  cc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$ROOT/lib64/stubs/libcuda.so" "$c"
  echo "build-cuda: libcuda stub with $(wc -l <"$c") driver symbols (cudarc $ver)"
}

export_env() {
  export CUDA_ROOT="$ROOT" CUDA_PATH="$ROOT" CUDA_HOME="$ROOT" CUDA_TOOLKIT_ROOT_DIR="$ROOT"
  export NVCC="$PIP_DIR/nvidia/cu13/bin/nvcc"
  export PATH="$PIP_DIR/nvidia/cu13/bin:$PATH"
  export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}"
  export LIBRARY_PATH="$ROOT/lib64:$ROOT/lib64/stubs${LIBRARY_PATH:+:$LIBRARY_PATH}"
  export CPATH="$ROOT/include${CPATH:+:$CPATH}"
  # Only the build scripts run here (nvcc needs nothing from it, but keep the wheel libs findable
  # for any build step that dlopens them); the stub folder is deliberately left out.
  export LD_LIBRARY_PATH="$ROOT/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  export CARGO_TARGET_DIR="$REPO/target/cuda"
}

if [[ "${1:-}" == "--env" ]]; then
  install_toolkit >&2
  [[ -d "$ROOT/lib64/stubs" ]] || make_root >&2
  export_env
  for v in CUDA_ROOT CUDA_PATH CUDA_HOME CUDA_TOOLKIT_ROOT_DIR NVCC PATH CUDA_COMPUTE_CAP LIBRARY_PATH CPATH LD_LIBRARY_PATH CARGO_TARGET_DIR; do
    printf 'export %s=%q\n' "$v" "${!v}"
  done
  exit 0
fi

t0=$(date +%s)
install_toolkit
make_root
export_env
"$NVCC" --version | tail -2
echo "build-cuda: CUDA_COMPUTE_CAP=$CUDA_COMPUTE_CAP CARGO_TARGET_DIR=$CARGO_TARGET_DIR"
t1=$(date +%s)
FEATURES="${FACEVAL_FEATURES:-cuda}"
echo "build-cuda: features $FEATURES"
nice -n 10 cargo build --profile gpu --locked --features "$FEATURES" -p faceval
t2=$(date +%s)

BIN="$CARGO_TARGET_DIR/gpu/faceval"
# [profile.gpu] inherits release, which strips; strip again in case an override turned it off.
strip "$BIN" 2>/dev/null || true
size=$(stat -c %s "$BIN")
echo "build-cuda: toolkit $((t1 - t0)) s, cargo build $((t2 - t1)) s"
echo "build-cuda: $BIN is $((size / 1024 / 1024)) MiB ($size bytes)"
echo "build-cuda: shared libraries it needs (libcuda.so.1 is the driver's on the GPU machine):"
readelf -d "$BIN" | awk '/NEEDED/{print "  " $NF}' | tr -d '[]'
# The device tool carries at most 64 MiB in all (working tree included), and the binary alone
# is close to that: most of it is PTX text, which xz shrinks about 6x. gpu-check.sh unpacks it.
mkdir -p "$REPO/.gpu-carry"
xz -9 -T2 -c "$BIN" >"$REPO/.gpu-carry/faceval.xz.tmp"
mv "$REPO/.gpu-carry/faceval.xz.tmp" "$REPO/.gpu-carry/faceval.xz"
echo "build-cuda: $REPO/.gpu-carry/faceval.xz is $(($(stat -c %s "$REPO/.gpu-carry/faceval.xz") / 1024 / 1024)) MiB (carry .gpu-carry to the GPU machine)"
