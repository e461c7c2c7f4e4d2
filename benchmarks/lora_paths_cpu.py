"""The three ways of applying LoRA-subspace directions, timed on the CPU against plain evaluation, in one process.

A Llama from config (512 wide, 4 layers, GQA 8/2 heads, vocab 4096, random weights), 8 sequences x 512 tokens in
one batch; a 3 x 3 rank-8 plane over every projection per path (`LowRankEditor.fused_linear` /
`merged_linear`), against 9 plain `probe.loss()` calls; minimum of `--rounds` rounds, the order alternating.
Prints each path's time as a ratio to the plain evaluations. The GPU numbers come from `llm_scale.py`.

    MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=1073741824 python benchmarks/lora_paths_cpu.py
"""

from __future__ import annotations

import argparse
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from hf_landscape import CausalLMObjective, LandscapeProbe
from hf_landscape.engine import LowRankEditor

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
PATHS = ["plain", "fused", "merged", "hook"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    config = LlamaConfig(
        hidden_size=512, intermediate_size=1408, num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=2,
        vocab_size=4096,
    )  # fmt: skip
    model = LlamaForCausalLM(config).eval()
    ids = torch.randint(0, 4096, (8, 512)).tolist()
    probe = LandscapeProbe(model, CausalLMObjective({"input_ids": ids}, max_length=512, batch_size=8), progress=False)
    best: dict[str, float] = {}
    for r in range(args.rounds):
        for path in PATHS if r % 2 == 0 else PATHS[::-1]:
            LowRankEditor.fused_linear = path != "hook"
            LowRankEditor.merged_linear = path == "merged"
            try:
                start = time.perf_counter()
                if path == "plain":
                    for _ in range(9):
                        probe.loss()
                else:
                    probe.plane(steps=(3, 3), seed=0, directions="lora", rank=8, target_modules=TARGETS)
                best[path] = min(best.get(path, float("inf")), time.perf_counter() - start)
            finally:
                LowRankEditor.fused_linear = True
                LowRankEditor.merged_linear = True
    print(f"{torch.get_num_threads()} threads, min of {args.rounds} rounds")
    print("| path | s (9 points) | x plain |\n|---|---|---|")
    for path in PATHS:
        print(f"| {path} | {best[path]:.2f} | {best[path] / best['plain']:.3f} |")


if __name__ == "__main__":
    main()
