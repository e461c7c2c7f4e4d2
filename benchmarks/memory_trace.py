"""Where the GPU memory of a full-rank plane goes, stage by stage (a diagnostic for llm_scale.py).

python benchmarks/memory_trace.py
"""

from __future__ import annotations

import torch
from bench_utils import LLAMA_CONFIGS
from transformers import LlamaConfig, LlamaForCausalLM

from hf_landscape import CausalLMObjective, LandscapeProbe
from hf_landscape.directions import prepare
from hf_landscape.engine import editing


def gib() -> str:
    return f"allocated {torch.cuda.memory_allocated() / 2**30:.2f} GiB, peak {torch.cuda.max_memory_allocated() / 2**30:.2f}"


def main() -> None:
    config = LlamaConfig(**LLAMA_CONFIGS["1b"])
    with torch.device("cuda"):
        model = LlamaForCausalLM(config).to(torch.bfloat16).eval()
    print("model:", gib())
    ids = torch.randint(0, 32000, (32, 1024)).tolist()
    probe = LandscapeProbe(model, CausalLMObjective({"input_ids": ids}, max_length=1024, batch_size=8), progress=False)
    torch.cuda.reset_peak_memory_stats()
    probe.loss()
    print("after loss:", gib())
    torch.cuda.reset_peak_memory_stats()
    dirs = probe.directions(seed=0)
    print("directions drawn (CPU draw, moved to GPU):", gib())
    torch.cuda.reset_peak_memory_stats()
    params, tensors = prepare(probe.model, dirs)
    print("prepared:", gib())
    with editing(model, params) as editor:
        print("originals saved:", gib())
        torch.cuda.reset_peak_memory_stats()
        editor.set_linear((0.5, -0.5), tensors)
        torch.cuda.synchronize()
        print("after one set_linear:", gib())
        torch.cuda.reset_peak_memory_stats()
        with torch.inference_mode():  # as the engine does; without it autograd keeps every activation
            probe.objective.evaluate(model)
        print("after one evaluation:", gib())
    # The same through `probe.plane`, with the peak printed after each stage of the plane call.
    import hf_landscape.engine.policy as policy
    import hf_landscape.engine.runner as runner
    import hf_landscape.probe as probe_module

    def traced(owner, name):
        original = getattr(owner, name)

        def wrapper(*args, **kwargs):
            print(f"  before {name}:", gib())
            out = original(*args, **kwargs)
            torch.cuda.synchronize()
            print(f"  after {name}:", gib())
            return out

        setattr(owner, name, wrapper)

    for owner, name in [
        (policy.POLICY, "points_per_forward"),
        (runner, "run_grid"),
        (policy, "evaluate"),
        (runner, "prepare"),
        (probe_module, "surface_metadata"),
    ]:
        traced(owner, name)
    torch.cuda.reset_peak_memory_stats()
    print("probe.plane(steps=(2, 2), directions=dirs):")
    probe.plane(steps=(2, 2), directions=dirs)
    print("after the plane:", gib())
    # As llm_scale.py does it: directions drawn on the GPU, then the plane.
    from llm_scale import gpu_directions

    del dirs, editor
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    gpu_dirs = gpu_directions(model, 0)
    print("GPU-drawn directions:", gib())
    torch.cuda.reset_peak_memory_stats()
    print("probe.plane(steps=(2, 2), directions=gpu_dirs):")
    probe.plane(steps=(2, 2), directions=gpu_dirs)
    print("after the plane:", gib())


if __name__ == "__main__":
    main()
