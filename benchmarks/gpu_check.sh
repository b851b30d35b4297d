#!/usr/bin/env bash
# One prepared GPU check for kdkit's fused losses (issues 6, 17): packages first, GPU correctness,
# then the headline shapes of every op, then the rest of the priority grid. Step limits
# (15 + 150 + 150 + 140 s) keep it inside 8 minutes on one H200.
#
#   bash benchmarks/gpu_check.sh            # on the GPU machine (carry .whl/ if it lacks packages)
#   DRY_RUN=1 bash benchmarks/gpu_check.sh  # CPU rehearsal: static sm_90 check, interpreter tests,
#                                           # tiny bench shapes (limits 240 + 240 + 150 s)
#
# Packages: benchmarks/check_imports.py lists what is missing; when .whl/ holds wheels (from
# benchmarks/fetch_device_wheels.sh, run where pip reaches PyPI) they are installed with
# `pip install --no-index --no-deps --target "$SITE"` and put on PYTHONPATH; a required package
# still missing stops the script with exit 3 before anything runs.
#
# Results go to $OUT/kernels-gpu (when OUT is set) else benchmarks/results/gpu-<date>/
# (DRY_RUN: $OUT/kernels-dryrun or a temporary directory). Each step has its own time limit, and
# a failing step does not stop the next; the exit code is that of the first failing step.
set -uo pipefail
cd "$(dirname "$0")/.."
DRY_RUN="${DRY_RUN:-0}"
# the interpreter: $PYTHON, else the checkout's .venv (a dry run here), else python3 (the device)
PY="${PYTHON:-python3}"
if [ -z "${PYTHON:-}" ] && [ -x .venv/bin/python ]; then PY=.venv/bin/python; fi
STAMP="$(date -u +%Y%m%d-%H%M)"
if [ "$DRY_RUN" = "1" ]; then
  DEST="${OUT:+$OUT/kernels-dryrun}"
  DEST="${DEST:-$(mktemp -d)/kernels-dryrun}"
  export TRITON_INTERPRET=1 KDKIT_TEST_DEVICE=cpu
  DEVICE=cpu
else
  DEST="${OUT:+$OUT/kernels-gpu}"
  DEST="${DEST:-benchmarks/results/gpu-$STAMP}"
  export TRITON_INTERPRET=0 KDKIT_TEST_DEVICE=cuda
  DEVICE=cuda
fi
export PYTHONUNBUFFERED=1 TRITON_DEFAULT_FP_FUSION=1
mkdir -p "$DEST"
LOG="$DEST/gpu_check.log"
status=0
. benchmarks/steps.sh  # step NAME SECONDS CMD...

# 0. packages: say what is missing; install carried wheels; stop early if a required one lacks
echo "== packages" | tee -a "$LOG"
"$PY" benchmarks/check_imports.py 2>&1 | tee -a "$LOG"
if [ "$DRY_RUN" = "1" ]; then
  echo "DRY_RUN: carried wheels are installed on the device only ($(ls .whl/*.whl 2>/dev/null | wc -l) in .whl/)" | tee -a "$LOG"
elif ls .whl/*.whl >/dev/null 2>&1; then
  SITE="${SITE:-/tmp/kdkit-site}"
  echo "installing $(ls .whl/*.whl | wc -l) carried wheels from .whl/ into $SITE" | tee -a "$LOG"
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --find-links .whl --target "$SITE" .whl/*.whl 2>&1 | tail -5 | tee -a "$LOG"
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi
if ! "$PY" benchmarks/check_imports.py > "$DEST/imports.txt" 2>&1; then
  cat "$DEST/imports.txt" | tee -a "$LOG"
  echo "gpu_check: required packages missing (see above); nothing was run" | tee -a "$LOG"
  exit 3
fi
grep -q "^MISSING  matplotlib" "$DEST/imports.txt" && PLOTS=--no-plots || PLOTS=
XDIST=; grep -q "^MISSING  xdist" "$DEST/imports.txt" || XDIST="-p xdist -n 8"

# kdkit importable? (on the device: an editable install into its throw-away python; else, and
# always in a dry run, a path shim mapping kernels/ -> kdkit.kernels: nothing is installed here)
if [ "$DRY_RUN" != "1" ] && ! "$PY" -c "import kdkit.kernels" 2>/dev/null; then
  "$PY" -m pip install -q --no-deps --no-build-isolation --no-index -e . >/dev/null 2>&1 || true
fi
if ! "$PY" -c "import kdkit.kernels" 2>/dev/null; then
  SHIM="$(mktemp -d)"
  cp -r kdkit "$SHIM/kdkit"
  ln -s "$PWD/kernels" "$SHIM/kdkit/kernels"
  [ -d plugins ] && ln -s "$PWD/plugins" "$SHIM/kdkit/plugins"
  export PYTHONPATH="$SHIM:$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # so that tests.kernels.* imports
KDKIT=("$PY" -c "import sys; from kdkit.cli import main; sys.exit(main(sys.argv[1:]))")

{
  echo "date: $STAMP  dry_run: $DRY_RUN  git: $(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)"
  "$PY" -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, 'cuda', torch.cuda.is_available())"
  if [ "$DEVICE" = cuda ]; then nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; fi
} 2>&1 | tee -a "$LOG"

TESTS=(tests/kernels/test_numerics_edges.py tests/kernels/test_kd_triton.py
       tests/kernels/test_infonce_triton.py tests/kernels/test_ckd_triton.py
       tests/kernels/test_dist_triton.py tests/kernels/test_fused_linear_kd.py)
OPS=kd_loss,infonce_loss,ckd_loss,fused_linear_kd,dist_loss
if [ "$DEVICE" = cuda ]; then
  # 1. correctness of every Triton kernel against the float64 references, on the device
  # shellcheck disable=SC2086
  step "pytest (kernels vs float64, on the GPU)" 150 "$PY" -m pytest -q -p no:cacheprovider $XDIST "${TESTS[@]}"
  # 2. the headline shapes of every op first (kd N=8192 C=32000 and 128256; InfoNCE B=8192
  #    d=768; CKD B=16 K=7 T=512 W=10; fused_linear_kd H=4096 C=128256 N=8192), all providers
  step "bench headline (all providers)" 150 "${KDKIT[@]}" bench --device cuda --shapes headline \
    --dtypes bf16 --ops "$OPS" --out "$DEST/headline" --max-seconds 130 $PLOTS
  # 3. the rest of the priority grid while time remains
  step "bench priority (triton, reference)" 140 "${KDKIT[@]}" bench --device cuda --shapes priority \
    --dtypes bf16,fp32 --ops "$OPS" --providers kdkit-triton,reference --out "$DEST/priority" \
    --max-seconds 120 $PLOTS
else
  # 1. the static sm_90 check (what a GPU would compile; no GPU needed)
  step "static sm_90 check" 240 env TRITON_INTERPRET=0 "${KDKIT[@]}" bench --static --quick \
    --out "$DEST/static"
  # 2. a subset of the kernel tests in the interpreter (the numerics reproducers + kd_loss)
  step "pytest (interpreter, numerics + kd)" 240 "$PY" -m pytest -q -x -p no:cacheprovider \
    -W ignore::RuntimeWarning "${TESTS[0]}" "${TESTS[1]}"
  # 3. tiny bench shapes through the interpreter
  step "bench dry run (interpreter, tiny shapes)" 150 "${KDKIT[@]}" bench --device cpu --quick \
    --ops "$OPS" --providers kdkit-triton,reference --modes fwd+bwd --out "$DEST/quick" --no-plots \
    --max-seconds 110
fi
echo "results in $DEST (exit $status)" | tee -a "$LOG"
exit "$status"
