#!/usr/bin/env bash
# One prepared GPU check for kdkit's fused losses (issue 6): GPU correctness first, then the
# priority shapes; the step limits (120 + 240 + 80 s) keep it inside 8 minutes on one H200.
#
#   bash benchmarks/gpu_check.sh            # on the GPU machine
#   DRY_RUN=1 bash benchmarks/gpu_check.sh  # CPU rehearsal: Triton interpreter, tiny shapes
#
# Results go to $OUT/kernels-gpu (when OUT is set) else benchmarks/results/gpu-<date>/
# (DRY_RUN: $OUT/kernels-dryrun or a temporary directory). Each step has its own time limit, and
# a failing step does not stop the next; the exit code is that of the first failing step.
set -uo pipefail
cd "$(dirname "$0")/.."
DRY_RUN="${DRY_RUN:-0}"
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
mkdir -p "$DEST"
LOG="$DEST/gpu_check.log"
status=0
step() {  # step NAME SECONDS CMD...: run with a time limit, log, remember the first failure
  local name="$1" limit="$2"; shift 2
  echo "== $name (limit ${limit}s): $*" | tee -a "$LOG"
  local t0=$SECONDS
  timeout "$limit" "$@" 2>&1 | tee -a "$LOG"
  local rc=${PIPESTATUS[0]}
  echo "== $name: exit $rc after $((SECONDS - t0))s" | tee -a "$LOG"
  if [ "$rc" != 0 ] && [ "$status" = 0 ]; then status=$rc; fi
}

# kdkit importable? (editable install; else a path shim mapping kernels/ -> kdkit.kernels)
if ! python -c "import kdkit.kernels" 2>/dev/null; then
  pip install -q --no-deps --no-build-isolation -e . >/dev/null 2>&1 || true
fi
if ! python -c "import kdkit.kernels" 2>/dev/null; then
  SHIM="$(mktemp -d)"
  cp -r kdkit "$SHIM/kdkit"
  ln -s "$PWD/kernels" "$SHIM/kdkit/kernels"
  [ -d plugins ] && ln -s "$PWD/plugins" "$SHIM/kdkit/plugins"
  export PYTHONPATH="$SHIM:$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # so that tests.kernels.* imports

{
  echo "date: $STAMP  dry_run: $DRY_RUN  git: $(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)"
  python -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, 'cuda', torch.cuda.is_available())"
  if [ "$DEVICE" = cuda ]; then nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; fi
} 2>&1 | tee -a "$LOG"

# 1. correctness of every Triton kernel against the float64 references, on the device
step "pytest (kernels vs float64)" 120 python -m pytest -q -x -p no:cacheprovider \
  tests/kernels/test_kd_triton.py tests/kernels/test_dist_triton.py \
  tests/kernels/test_infonce_triton.py tests/kernels/test_ckd_triton.py \
  tests/kernels/test_fused_linear_kd.py

if [ "$DEVICE" = cuda ]; then
  # 2. priority shapes, kdkit Triton vs eager reference (correctness-gated, ceilings measured)
  step "bench priority (triton, reference, naive)" 240 python -c "import sys; from kdkit.cli import main; sys.exit(main(sys.argv[1:]))" \
    bench --device cuda --shapes priority --dtypes bf16,fp32 --ops kd_loss,infonce_loss,ckd_loss,dist_loss,fused_linear_kd \
    --providers kdkit-triton,reference,naive --out "$DEST/priority" --max-seconds 200
  # 3. torch.compile and Liger-Kernel where time remains
  step "bench priority (torch.compile, liger)" 80 python -c "import sys; from kdkit.cli import main; sys.exit(main(sys.argv[1:]))" \
    bench --device cuda --shapes priority --dtypes bf16 --ops kd_loss,infonce_loss \
    --providers torch-compile,liger,reference --out "$DEST/compile" --max-seconds 50
else
  step "bench dry run (interpreter, tiny shapes)" 150 python -c "import sys; from kdkit.cli import main; sys.exit(main(sys.argv[1:]))" \
    bench --device cpu --quick --ops kd_loss,infonce_loss,ckd_loss,dist_loss,fused_linear_kd \
    --providers kdkit-triton,reference --out "$DEST/quick" --no-plots --max-seconds 100
fi
echo "results in $DEST (exit $status)" | tee -a "$LOG"
exit "$status"
