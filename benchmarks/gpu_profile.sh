#!/usr/bin/env bash
# A short GPU profile of a real distillation step (issue 16), for benchmarks/gpu_check.sh:
# the default run's KD step, 20 measured steps per kernel implementation (reference, triton)
# under torch.profiler with CUDA-event region timing, then (when nsys is installed) one step
# bracketed by cudaProfilerStart/Stop and captured by nsys.
#
#   bash benchmarks/gpu_profile.sh             # on the GPU machine
#   DRY_RUN=1 bash benchmarks/gpu_profile.sh   # CPU rehearsal: Triton interpreter, 2 steps
#
# The first call on a fresh machine also builds the offline dataset and trains the default
# code teacher (both cached in KDKIT_CACHE afterwards); the time limits below include that.
# Results go to $OUT/profile-gpu (when OUT is set) else benchmarks/results/profile-<date>/
# (DRY_RUN: $OUT/profile-dryrun or a temporary directory). Exit code: the first failing step's.
set -uo pipefail
cd "$(dirname "$0")/.."
DRY_RUN="${DRY_RUN:-0}"
STAMP="$(date -u +%Y%m%d-%H%M)"
if [ "$DRY_RUN" = "1" ]; then
  DEST="${OUT:+$OUT/profile-dryrun}"
  DEST="${DEST:-$(mktemp -d)/profile-dryrun}"
  export TRITON_INTERPRET=1
  ARGS=(--set training.device=cpu --set training.num_threads=1 --steps 2 --warmup 1)
else
  DEST="${OUT:+$OUT/profile-gpu}"
  DEST="${DEST:-benchmarks/results/profile-$STAMP}"
  export TRITON_INTERPRET=0
  ARGS=(--set training.device=cuda --steps 20 --warmup 5)
fi
unset KDKIT_KERNEL_IMPL  # it would override --compare-impl
mkdir -p "$DEST"
LOG="$DEST/gpu_profile.log"
status=0
. benchmarks/steps.sh  # step NAME SECONDS CMD...
if ! python -c "import kdkit.profiling" 2>/dev/null; then
  pip install -q --no-deps --no-build-isolation -e . >/dev/null 2>&1 || true
fi
{
  echo "date: $STAMP  dry_run: $DRY_RUN  git: $(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)"
  python -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
} 2>&1 | tee -a "$LOG"

# 1. reference vs triton, the same steps in one process: regions, operators, memory, ratios
step "kdkit profile --compare-impl reference,triton" 420 \
  python -m kdkit profile "${ARGS[@]}" --compare-impl reference,triton --quiet --out "$DEST/compare"

# 2. one step for an external profiler (GPU only, when nsys is installed)
if [ "$DRY_RUN" != "1" ] && command -v nsys >/dev/null 2>&1; then
  step "nsys: one captured step" 180 \
    nsys profile --capture-range=cudaProfilerApi --capture-range-end=stop --trace=cuda,nvtx \
    -o "$DEST/captured-step" --force-overwrite true \
    python -m kdkit profile "${ARGS[@]}" --steps 3 --capture-step --quiet --out "$DEST/capture"
else
  echo "== nsys capture skipped (dry run or nsys not installed)" | tee -a "$LOG"
fi
echo "results: $DEST" | tee -a "$LOG"
exit $status
