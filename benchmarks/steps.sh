# Sourced by benchmarks/gpu_check.sh and benchmarks/gpu_profile.sh (after they set LOG and
# status=0): `step NAME SECONDS CMD...` runs CMD with a time limit, logs it to $LOG, and keeps
# the first non-zero exit code in $status.
step() {
  local name="$1" limit="$2"; shift 2
  echo "== $name (limit ${limit}s): $*" | tee -a "$LOG"
  local t0=$SECONDS
  timeout "$limit" "$@" 2>&1 | tee -a "$LOG"
  local rc=${PIPESTATUS[0]}
  echo "== $name: exit $rc after $((SECONDS - t0))s" | tee -a "$LOG"
  if [ "$rc" != 0 ] && [ "$status" = 0 ]; then status=$rc; fi
}
