#!/usr/bin/env bash
# The GPU check (a few minutes on one GPU): training at 224 px, analysis against the forward pass,
# a 518 px DINOv2-size model; prints one table. See benchmarks/device_check.py for what it measures.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
if command -v uv >/dev/null 2>&1 && [ -f uv.lock ]; then
    exec uv run --frozen python benchmarks/device_check.py "$@"
fi
exec python benchmarks/device_check.py "$@"
