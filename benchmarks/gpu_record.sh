#!/usr/bin/env bash
# The GPU measurements of record (benchmarks/README.md), in stages that each fit a 10-minute call on one H100/H200
# with a CUDA build of torch already installed:
#
#   benchmarks/gpu_record.sh core        # GPU tests; LLM scale at 1.1B and 8B; the memory trace; an 8B 21 x 21
#                                        # LoRA plane end to end; a process's first plane
#   benchmarks/gpu_record.sh peers       # the peer table (make bench-gpu's runs)
#   benchmarks/gpu_record.sh curvature   # curvature cost at 1.1B and 8B; the benchmark-score objectives
#
# Each step's output goes to $RECORD_DIR/<stage>.log (default gpu_record/), its JSON beside it; a step that fails or
# runs past its limit is logged and the stage goes on. Peers come from .whl/ (benchmarks/wheels.sh), test tools from
# .whl/extra/ when the machine lacks them; nothing replaces the installed torch.
set -uo pipefail
cd "$(dirname "$0")/.."

STAGE="${1:?usage: benchmarks/gpu_record.sh core|peers|curvature}"
DIR="${RECORD_DIR:-gpu_record}"
mkdir -p "$DIR"
LOG="$DIR/$STAGE.log"
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
export PYTHONPATH="$PWD:$PWD/.whl/site:${PYTHONPATH:-}"

if ! python3 -c "import pytest" 2>/dev/null && ls .whl/extra/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/record-site .whl/extra/*.whl
    export PYTHONPATH="$PYTHONPATH:/tmp/record-site"
fi

step() {  # step SECONDS NAME COMMAND...
    local limit=$1 name=$2
    shift 2
    echo "=== $name ($(date -u +%FT%TZ)): $*" | tee -a "$LOG"
    local start=$SECONDS
    timeout "$limit" "$@" 2>&1 | tee -a "$LOG"
    echo "=== $name: exit ${PIPESTATUS[0]} after $((SECONDS - start)) s" | tee -a "$LOG"
}

{
    date -u +%FT%TZ
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    python3 -c "import torch, transformers, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, 'transformers', transformers.__version__)"
    git log -1 --format='hf_landscape at %h' 2>/dev/null || true
} 2>&1 | tee "$LOG"

case "$STAGE" in
core)
    step 150 test-gpu python3 -m pytest tests/test_cuda_graphs.py tests/test_fused_nll.py -q -p no:cacheprovider -m gpu
    step 150 llm-scale python3 benchmarks/llm_scale.py --models 1b,8b --steps 3 --lora-paths merged --json "$DIR/llm_scale.json"
    step 60 memory-trace python3 benchmarks/memory_trace.py
    step 180 llm-plane-8b python3 benchmarks/llm_plane.py --model 8b --steps 21 --sequences 4 --tokens 1024 --json "$DIR/llm_plane_8b.json"
    step 60 first-plane python3 benchmarks/first_plane.py --workload b --dtype bfloat16
    ;;
peers)
    python3 -m pip install -q --no-deps --no-index --upgrade --target .whl/site .whl/*.whl
    step 200 gpu-speed python3 benchmarks/gpu_speed.py --workloads b,a --dtypes bfloat16,float32 --ks 16,auto --no-compile --json "$DIR/gpu_speed.json"
    step 150 peers-bf16 python3 benchmarks/compare_peers.py --workload both --device cuda --dtype bfloat16 --tools hf_landscape,loss_landscapes,landscaper --json "$DIR/peers_bf16.json"
    step 150 peers-fp32 python3 benchmarks/compare_peers.py --workload both --device cuda --dtype float32 --tools hf_landscape,loss_landscapes,landscaper --json "$DIR/peers_fp32.json"
    ;;
curvature)
    step 60 test-gpu python3 -m pytest tests/test_cuda_graphs.py tests/test_fused_nll.py -q -p no:cacheprovider -m gpu
    [ -f benchmarks/curvature_cost.py ] && step 300 curvature python3 benchmarks/curvature_cost.py --device cuda --out "$DIR/curvature.json"
    [ -f benchmarks/benchmark_objectives.py ] && step 200 benchmark-objectives python3 benchmarks/benchmark_objectives.py --device cuda --out "$DIR/benchmark_objectives.json"
    ;;
*)
    echo "unknown stage: $STAGE (core, peers or curvature)" >&2
    exit 2
    ;;
esac
