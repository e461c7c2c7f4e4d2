#!/usr/bin/env bash
# The GPU measurements of record (benchmarks/README.md), in stages that each fit a 10-minute call on one H100/H200
# with a CUDA build of torch already installed, most wanted first:
#
#   benchmarks/gpu_record.sh record    # GPU tests; an 8B 21 x 21 LoRA plane end to end; the benchmark-score
#                                      # objectives at 1.1B; curvature cost at 1.1B and 8B; LLM scale at 1.1B and 8B
#   benchmarks/gpu_record.sh refresh   # the peer table (make bench-gpu's comparison) in bf16 and fp32; the memory
#                                      # trace; a process's first plane
#   benchmarks/gpu_record.sh paths     # hf_landscape's own evaluation paths (make bench-gpu's gpu_speed.py)
#   benchmarks/gpu_record.sh curvature # curvature cost alone at 1.1B and 8B: products, top eigenvalues, spectrum
#
# Each step's output goes to $RECORD_DIR/<stage>.log (default gpu_record/), its JSON beside it; a step that fails or
# runs past its limit is logged and the stage goes on; no step runs past $DEADLINE seconds (default 570) from the
# start. Peers come from .whl/ (benchmarks/wheels.sh); nothing replaces the installed torch.
set -uo pipefail
cd "$(dirname "$0")/.."

STAGE="${1:?usage: benchmarks/gpu_record.sh record|refresh|paths|curvature}"
DIR="${RECORD_DIR:-gpu_record}"
mkdir -p "$DIR"
LOG="$DIR/$STAGE.log"
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
export PYTHONPATH="$PWD:$PWD/.whl/site:${PYTHONPATH:-}"

# What the machine lacks, after what it has (so nothing it has is replaced): pytest from .whl/test/, `datasets` (a
# dependency of hf_landscape) from .whl/extra/ and pyarrow and pandas from .whl/stack/pyarrow-pandas.tar.xz (the two
# wheels unpacked and compressed with xz, to fit the files a call may carry).
SITE=/tmp/record-site
mkdir -p "$SITE"
export PYTHONPATH="$PYTHONPATH:$SITE"
if ! python3 -c "import pytest" 2>/dev/null && ls .whl/test/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --target "$SITE" .whl/test/*.whl
fi
if ! python3 -c "import datasets" 2>/dev/null && ls .whl/extra/*.whl >/dev/null 2>&1; then
    python3 -c "import pyarrow, pandas" 2>/dev/null || tar xJf .whl/stack/pyarrow-pandas.tar.xz -C "$SITE"
    python3 -m pip install -q --no-index --no-deps --no-compile --target "$SITE" .whl/extra/*.whl
fi

DEADLINE="${DEADLINE:-570}"
step() {  # step SECONDS NAME COMMAND...: at most SECONDS, and never past the deadline
    local limit=$1 name=$2
    shift 2
    local left=$((DEADLINE - SECONDS))
    [ "$left" -lt "$limit" ] && limit=$left
    if [ "$limit" -lt 20 ]; then
        echo "=== $name: skipped, the stage's deadline is near" | tee -a "$LOG"
        return
    fi
    echo "=== $name ($(date -u +%FT%TZ)): $*" | tee -a "$LOG"
    local start=$SECONDS
    timeout "$limit" "$@" 2>&1 | tee -a "$LOG"
    echo "=== $name: exit ${PIPESTATUS[0]} after $((SECONDS - start)) s" | tee -a "$LOG"
}

{
    date -u +%FT%TZ
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    python3 -c "import torch, transformers, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, 'transformers', transformers.__version__)"
} 2>&1 | tee "$LOG"

case "$STAGE" in
record)
    step 70 test-gpu python3 -m pytest tests/test_cuda_graphs.py tests/test_fused_nll.py tests/test_rowspace.py -q -p no:cacheprovider -m gpu
    step 130 llm-plane-8b python3 benchmarks/llm_plane.py --model 8b --steps 21 --sequences 4 --tokens 1024 --json "$DIR/llm_plane_8b.json"
    step 150 benchmark-objectives python3 benchmarks/benchmark_objectives.py --device cuda --model 1b --steps 11 --floor-steps 5 --questions 256 --generation-steps 3 --out "$DIR/benchmark_objectives.json"
    step 130 curvature python3 benchmarks/curvature_cost.py --device cuda --models 1b,8b --budget-s 100 --out "$DIR/curvature_cost.json"
    step 150 llm-scale python3 benchmarks/llm_scale.py --models 1b,8b --steps 3 --lora-paths merged --json "$DIR/llm_scale.json"
    ;;
refresh)
    python3 -m pip install -q --no-deps --no-index --upgrade --target .whl/site .whl/*.whl
    # One step per workload and dtype: each tool's process takes 25-40 s on a fresh machine (imports, the floor), so a
    # workload's three processes take ~100 s, and a step that runs past its limit loses only its own table.
    for dtype in bfloat16 float32; do
        for w in a b; do
            step 120 "peers-$dtype-$w" python3 benchmarks/compare_peers.py --workload "$w" --device cuda --dtype "$dtype" --tools hf_landscape,loss_landscapes,landscaper --tool-timeout 100 --json "$DIR/peers_${dtype}_$w.json"
        done
    done
    step 40 memory-trace python3 benchmarks/memory_trace.py
    step 40 first-plane python3 benchmarks/first_plane.py --workload b --dtype bfloat16
    ;;
curvature)
    step 60 test-rowspace python3 -m pytest tests/test_rowspace.py -q -p no:cacheprovider -m gpu
    step 500 curvature python3 benchmarks/curvature_cost.py --device cuda --models 1b,8b --budget-s 420 --out "$DIR/curvature_cost.json"
    ;;
paths)
    step 500 gpu-speed python3 benchmarks/gpu_speed.py --workloads b,a --dtypes bfloat16,float32 --ks 16,auto --no-compile --json "$DIR/gpu_speed.json"
    ;;
*)
    echo "unknown stage: $STAGE (record, refresh, paths or curvature)" >&2
    exit 2
    ;;
esac
