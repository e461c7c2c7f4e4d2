"""What length-sorted batching and bf16 autocast give, on the CPU: one plain evaluation of a GPT-2 (workload (a)
of `gpu_speed.py`: 4 layers, width 256, vocab 4096) over 128 variable-length passages of Tiny Shakespeare
(`../shared/data/text/tinyshakespeare.txt`, else the demo's sample), batch size 16, at most 128 tokens.

For each option it prints the padded share of the tokens the model runs over and the seconds per evaluation
(minimum over rounds, the options alternating). Run with the allocator settings of the house benchmarks:

    MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=1073741824 python benchmarks/batching_options.py
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

from hf_landscape import CausalLMObjective, LandscapeProbe
from hf_landscape.cli.demo import demo_text

SHAKESPEARE = Path(__file__).resolve().parents[2] / "shared" / "data" / "text" / "tinyshakespeare.txt"


def tokenizer_for(text: str) -> PreTrainedTokenizerFast:
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=4096, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    backend.train_from_iterator([text], trainer)
    return PreTrainedTokenizerFast(tokenizer_object=backend)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--passages", type=int, default=128)
    args = parser.parse_args()
    torch.manual_seed(0)
    text = SHAKESPEARE.read_text(encoding="utf-8")[:300_000] if SHAKESPEARE.is_file() else demo_text() * 20
    passages = [p.strip() for p in text.split("\n\n") if p.strip()][: args.passages]
    tokenizer = tokenizer_for(text)
    model = GPT2LMHeadModel(GPT2Config(n_layer=4, n_embd=256, n_head=4, vocab_size=4096, n_positions=128)).eval()
    options = {
        "sorted by length (default)": dict(sort_by_length=True),
        "in data order": dict(sort_by_length=False),
    }
    probes, padding = {}, {}
    for name, kw in options.items():
        objective = CausalLMObjective(passages, tokenizer, max_length=128, batch_size=16, **kw)
        probes[name] = LandscapeProbe(model, objective, progress=False)
        probes[name].loss()  # bind: batches built
        run = sum(b.input_ids.numel() for b in objective._batches)
        padding[name] = 1 - sum(b.lengths[i] for b in objective._batches for i in range(len(b.lengths))) / run
    probes["sorted, autocast bf16"] = LandscapeProbe(
        model, probes["sorted by length (default)"].objective, progress=False, autocast="bfloat16"
    )
    padding["sorted, autocast bf16"] = padding["sorted by length (default)"]
    best = {name: float("inf") for name in probes}
    values = {}
    for r in range(args.rounds):
        order = list(probes) if r % 2 == 0 else list(reversed(probes))
        for name in order:
            start = time.perf_counter()
            values[name] = probes[name].loss()
            best[name] = min(best[name], time.perf_counter() - start)
    base = best["sorted by length (default)"]
    print(f"{len(passages)} passages, {torch.get_num_threads()} threads, min of {args.rounds} rounds")
    print("| option | padded tokens | s / evaluation | x sorted | loss |\n|---|---|---|---|---|")
    for name in probes:
        print(f"| {name} | {padding[name]:.1%} | {best[name]:.3f} | {best[name] / base:.2f} | {values[name]:.6f} |")


if __name__ == "__main__":
    main()
