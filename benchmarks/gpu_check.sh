#!/usr/bin/env bash
# The GPU check of a lent card, in one command that ends within about 8 minutes: the carried wheels installed, the GPU
# tests (tests/gpu/test_gpu.py), then the throughput/MFU rows of benchmarks/gpu_step.py within what time is left and one
# GRPO step of Qwen2.5-VL-7B (benchmarks/grpo.py); logs and figures under $OUT (the device tool's folder; runs/gpu_check
# elsewhere).
#
#   make gpu-wheels                      # here, once: what the GPU image lacks, as wheels in .whl/
#   bash benchmarks/gpu_check.sh         # on the lent machine, with .whl carried
#   bash benchmarks/gpu_check.sh --smoke # on a CPU: the same steps, the GPU tests skipped, tiny throughput rows
set -uo pipefail
cd "$(dirname "$0")/.."
SMOKE=0
[ "${1:-}" = "--smoke" ] && SMOKE=1
OUT=${OUT:-runs/gpu_check}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
START=$(date +%s)
GRPO_S=150
if [ $SMOKE = 0 ] && ls .whl/*.whl >/dev/null 2>&1; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        || { echo "error: the carried wheels do not install" >&2; exit 2; }
    export PYTHONPATH=/tmp/site:$PWD
else
    export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONUNBUFFERED=1 GPU_CHECK_OUT=$OUT
{ nvidia-smi || echo "no nvidia-smi"; $PY -c "import torch; print('torch', torch.__version__, torch.cuda.is_available())"; } \
    > "$OUT/machine.txt" 2>&1
timeout 330 $PY -m pytest -q -m gpu -p no:cacheprovider -o addopts="" tests/gpu/test_gpu.py 2>&1 | tee "$OUT/gpu_tests.log"
TESTS=${PIPESTATUS[0]}
LEFT=$(( 460 - ($(date +%s) - START) ))
if [ $SMOKE = 1 ]; then
    $PY benchmarks/gpu_step.py --smoke --steps 1 --out "$OUT/gpu_step.jsonl" 2>&1 | tee "$OUT/gpu_step.log"
else
    # the throughput rows leave GRPO_S seconds for one GRPO step of Qwen2.5-VL-7B at 16 frames after them
    timeout $(( LEFT > 60 + GRPO_S ? LEFT - GRPO_S : 60 )) $PY benchmarks/gpu_step.py \
        --budget-s $(( LEFT > 120 + GRPO_S ? LEFT - 90 - GRPO_S : 30 )) --out "$OUT/gpu_step.jsonl" 2>&1 \
        | tee "$OUT/gpu_step.log"
fi
if [ $SMOKE = 1 ]; then
    $PY benchmarks/grpo.py --backbones qwen2_5_vl --steps 1 2>&1 | tee "$OUT/grpo.log"
else
    timeout $GRPO_S $PY benchmarks/grpo.py --backbones qwen2_5_vl --preset 7b --num-frames 16 --accelerator gpu \
        --precision bf16-true --steps 1 2>&1 | tee "$OUT/grpo.log"
fi
echo "gpu tests exit status $TESTS; $(( $(date +%s) - START )) s in all; figures in $OUT"
exit $TESTS
