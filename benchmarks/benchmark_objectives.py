"""The cost of a benchmark-accuracy point and of a generated-answers point, against the plain causal-LM loss of the
same tokens, on one device, in one process.

Model: a Llama architecture built from a config with random weights (`--model`: `1b` is TinyLlama-1.1B's config,
`small` 4 layers of width 512, `tiny` 2 layers of width 64; `--layers` overrides the depth). Speed does not depend
on the weights' values, so random weights are as good as trained ones. Tokenizer: a byte-level BPE trained here on
the generated text (no network; `--vocab` tokens, the model keeps its own vocabulary size where it is larger).

Questions (`--questions`, default 256): made up of pseudo-words drawn with a fixed seed, a context of
`--context-words` words ending in "Answer:" and `--choices` choices of `--choice-words` words each, so every run
scores the same tokens. Three objectives over the same plane (`--steps` x `--steps` over [-span, span]^2, seed 0,
filter-normalized random directions drawn once and shared):
- `multiple choice`: `MultipleChoiceObjective`, `--batch-size` questions (all their choices) per forward;
- `causal-LM loss`: `CausalLMObjective` over exactly the rows the multiple-choice forwards read (each choice's
  context + continuation tokens), as many rows per forward, every token's loss: the floor the issue's target
  (multiple choice at most 1.1x) is measured against;
- `generation` (skipped with `--generation-steps 0`): `GenerationObjective`, greedy answers of `--max-new-tokens`
  tokens to the first `--generation-prompts` contexts, scored by exact match, on its own smaller plane; its cost
  per point is also given per generated token (random weights rarely emit EOS, so answers run to the limit).

`--floor-steps` gives the causal-LM plane its own, smaller size: its time per point does not depend on the grid.
Each plane runs `--repeats` times, the objectives alternating in order, and the table keeps each one's fastest
grid loop (the surface's `wall_time_s`, direction drawing excluded) per point; "x causal-LM" is the ratio to the
causal-LM row. Prints a markdown table and writes everything (configuration, versions, every time, centre values)
as JSON to `--out`.

    python benchmarks/benchmark_objectives.py --device cuda [--model 1b] [--steps 21] [--questions 256] [--out FILE]
    python benchmarks/benchmark_objectives.py --device cpu --model tiny --steps 5 --questions 32 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import time
from typing import Any

import torch
import transformers
from bench_utils import LLAMA_CONFIGS
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

import hf_landscape
from hf_landscape import CausalLMObjective, GenerationObjective, LandscapeProbe, MultipleChoiceObjective

MODELS: dict[str, dict[str, Any]] = {
    "1b": LLAMA_CONFIGS["1b"],
    "small": dict(hidden_size=512, intermediate_size=1408, num_hidden_layers=4, num_attention_heads=8,
                  num_key_value_heads=4, vocab_size=8192, max_position_embeddings=2048),
    "tiny": dict(hidden_size=64, intermediate_size=176, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=1024, max_position_embeddings=1024),
}  # fmt: skip
EOS = "<eos>"


def pseudo_words(n: int, rng: random.Random) -> list[str]:
    """`n` distinct pronounceable words of two to four syllables."""
    onsets, vowels, codas = (
        "b d f g k l m n p r s t v z br st tr pl".split(),
        "a e i o u ai ou".split(),
        ["", "n", "s", "r"],
    )
    words: set[str] = set()
    while len(words) < n:
        words.add(
            "".join(rng.choice(onsets) + rng.choice(vowels) + rng.choice(codas) for _ in range(rng.randint(2, 4)))
        )
    return sorted(words)


def make_questions(args: argparse.Namespace) -> dict[str, list]:
    rng = random.Random(0)
    words = pseudo_words(2000, rng)
    say = lambda k: " ".join(rng.choice(words) for _ in range(k))  # noqa: E731
    return {
        "question": [f"{say(args.context_words)}. Answer:" for _ in range(args.questions)],
        "choices": [[say(args.choice_words) for _ in range(args.choices)] for _ in range(args.questions)],
        "answer": [rng.randrange(args.choices) for _ in range(args.questions)],
    }


def train_tokenizer(texts: list[str], vocab: int) -> PreTrainedTokenizerFast:
    """A byte-level BPE trained on `texts`, with an EOS token (no network)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token=EOS)


def build_model(args: argparse.Namespace, vocab: int) -> LlamaForCausalLM:
    fields = dict(MODELS[args.model])
    fields["vocab_size"] = max(fields["vocab_size"], vocab)
    if args.layers:
        fields["num_hidden_layers"] = args.layers
    torch.manual_seed(0)
    with torch.device(args.device):
        model = LlamaForCausalLM(LlamaConfig(**fields, tie_word_embeddings=False))
    return model.to(getattr(torch, args.dtype)).eval()


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed_plane(probe: LandscapeProbe, steps: int, span: float, directions: list, device: str) -> tuple[Any, float]:
    synchronize(device)
    start = time.perf_counter()
    surface = probe.plane(steps=(steps, steps), span=(-span, span), directions=directions)
    synchronize(device)
    return surface, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--model", choices=sorted(MODELS), default="1b")
    parser.add_argument("--layers", type=int, default=0, help="override the model's number of layers")
    parser.add_argument("--dtype", default=None, help="default: bfloat16 on CUDA, float32 on the CPU")
    parser.add_argument("--vocab", type=int, default=4096, help="BPE tokens trained on the questions")
    parser.add_argument("--steps", type=int, default=21, help="the plane is steps x steps points")
    parser.add_argument("--span", type=float, default=1.0, help="the plane covers [-span, span]^2")
    parser.add_argument(
        "--floor-steps", type=int, default=0, help="the causal-LM plane's points per axis (0: --steps); per point"
    )
    parser.add_argument("--questions", type=int, default=256)
    parser.add_argument("--choices", type=int, default=4)
    parser.add_argument("--context-words", type=int, default=32)
    parser.add_argument("--choice-words", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=32, help="questions per forward (each brings its choices)")
    parser.add_argument(
        "--generation-steps", type=int, default=5, help="the generation plane's points per axis; 0: skip"
    )
    parser.add_argument("--generation-prompts", type=int, default=64)
    parser.add_argument("--generation-batch", type=int, default=64)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=1, help="planes per objective, alternating; the fastest is kept")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args()
    args.dtype = args.dtype or ("bfloat16" if args.device.startswith("cuda") else "float32")
    if args.threads:
        torch.set_num_threads(args.threads)

    data = make_questions(args)
    texts = data["question"] + [c for row in data["choices"] for c in row]
    tokenizer = train_tokenizer(texts, args.vocab)
    tick = time.perf_counter()
    model = build_model(args, len(tokenizer))
    build_s = time.perf_counter() - tick
    parameters = sum(p.numel() for p in model.parameters())

    choice = MultipleChoiceObjective(data, tokenizer, batch_size=args.batch_size)
    rows = [ctx + cont for pairs in choice._pairs for ctx, cont in pairs]  # the tokens every choice row reads
    causal = CausalLMObjective(
        {"input_ids": rows}, max_length=max(map(len, rows)), batch_size=args.batch_size * args.choices,
        add_special_tokens=False,
    )  # fmt: skip
    objectives: dict[str, Any] = {"multiple choice": choice, "causal-LM loss": causal}
    if args.generation_steps:
        objectives["generation"] = GenerationObjective(
            data["question"][: args.generation_prompts], tokenizer, "exact_match", max_new_tokens=args.max_new_tokens,
            references=[c[a] for c, a in zip(data["choices"], data["answer"])][: args.generation_prompts],
            batch_size=args.generation_batch,
        )  # fmt: skip
    probes = {name: LandscapeProbe(model, o, progress=False) for name, o in objectives.items()}
    directions = probes["multiple choice"].directions(0, axes=2)

    centre = {}
    for name, probe in probes.items():  # warm-up: binding, the first forward's kernels
        e = probe.evaluate()
        centre[name] = {"loss": e.loss, **e.metrics}
    best: dict[str, dict[str, float]] = {name: {} for name in probes}
    device_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor() or "CPU"
    record = {
        "args": vars(args),
        "device": device_name,
        "parameters": parameters,
        "tokens_per_point": sum(map(len, rows)),
        "model_build_s": build_s,
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "hf_landscape": hf_landscape.__version__},
        "date": time.strftime("%Y-%m-%d"),
        "centre": centre,
    }  # fmt: skip
    for r in range(args.repeats):
        names = list(probes) if r % 2 == 0 else list(reversed(probes))
        for name in names:
            steps = {"generation": args.generation_steps, "causal-LM loss": args.floor_steps}.get(name) or args.steps
            surface, call_s = timed_plane(probes[name], steps, args.span, directions, args.device)
            loop_s = surface.metadata["wall_time_s"]
            if loop_s < best[name].get("loop_s", float("inf")):
                best[name] = {"loop_s": loop_s, "call_s": call_s, "points": float(steps * steps)}
                if name == "generation":  # tokens generated per point, over all prompts
                    best[name]["new_tokens"] = float(surface.metrics["new_tokens"].mean()) * args.generation_prompts
            print(f"  round {r} {name}: {loop_s / steps**2 * 1e3:.2f} ms/point", flush=True)
            record["rows"] = table(best, centre, record["tokens_per_point"])
            if args.out:  # after every plane, so a run stopped early keeps what it measured
                with open(args.out, "w") as f:
                    json.dump(record, f, indent=1)

    floor_steps = args.floor_steps or args.steps
    header = ["objective", "points", "ms / point", "x causal-LM", "ms / generated token", "whole call s", "centre loss"]
    print(
        f"\n{args.model} Llama ({parameters / 1e6:.1f} M parameters, {args.dtype}) on {device_name}; "
        f"{args.questions} questions x {args.choices} choices, {record['tokens_per_point']} tokens per point; "
        f"plane {args.steps} x {args.steps}, causal-LM plane {floor_steps} x {floor_steps}"
    )
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for row in record["rows"]:
        cells = [row.get(h, "") for h in header]
        print("| " + " | ".join(f"{c:.4g}" if isinstance(c, float) else str(c) for c in cells) + " |")


def table(best: dict[str, dict[str, float]], centre: dict[str, dict], tokens: int) -> list[dict[str, Any]]:
    """One row per objective measured so far: its fastest grid loop per point, and the ratio to the causal-LM loss."""
    floor = best["causal-LM loss"]["loop_s"] / best["causal-LM loss"]["points"] if best["causal-LM loss"] else None
    rows = []
    for name, b in best.items():
        if not b:
            continue
        per_point = b["loop_s"] / b["points"]
        row: dict[str, Any] = {
            "objective": name,
            "points": int(b["points"]),
            "ms / point": per_point * 1e3,
            "x causal-LM": per_point / floor if floor else None,
            "whole call s": b["call_s"],
            "centre loss": centre[name]["loss"],
        }
        if name == "generation":
            row["ms / generated token"] = per_point / b["new_tokens"] * 1e3
            row["centre score"] = centre[name]["score"]
        else:
            row["tokens / point"] = tokens
        if name == "multiple choice":
            row["centre accuracy"] = centre[name]["accuracy"]
        rows.append(row)
    return rows


if __name__ == "__main__":
    main()
