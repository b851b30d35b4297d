#!/usr/bin/env bash
# Download the wheels the GPU machine's image lacks into .whl/ (git-ignored), for a device run
# to carry (the device has Python 3.12, torch 2.11 and Triton 3.6, but no network and no pip
# registry; see docs/benchmarks.md). Run it here, where pip reaches PyPI:
#
#   bash benchmarks/fetch_device_wheels.sh          # -> .whl/*.whl (about 4.4 MB)
#
# Versions are pinned (one version of each: two stop the install there): pydantic and its
# compiled core for CPython 3.12 manylinux x86_64, pydantic's small dependencies, Liger-Kernel
# for the comparison rows, and datasets (+ dill, multiprocess) for kdkit's task plugins.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
DEST="${WHEEL_DIR:-.whl}"
PKGS=(
  pydantic==2.13.4 pydantic-core==2.46.4 annotated-types==0.7.0 typing-inspection==0.4.2
  typing-extensions==4.16.0
  liger-kernel==0.8.5
  datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19
)
PLATFORMS=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
  PLATFORMS+=(--platform "$p")
done
mkdir -p "$DEST"
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  "${PLATFORMS[@]}" -d "$DEST" "${PKGS[@]}"
ls -l "$DEST"
du -sh "$DEST"
